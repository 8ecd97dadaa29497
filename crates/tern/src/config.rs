//! The configuration file (TOML) and its command-line overrides.
//!
//! Unknown keys are errors, so a typo is reported instead of silently ignored; every error names
//! the key (toml's messages carry the key path and the line).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Most worker threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// The whole configuration. Every field has a default, so an empty file is a valid config.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TCP listeners, `HOST:PORT`. Default: loopback only, like Mosquitto 2.
    pub listen: Vec<SocketAddr>,
    /// Where durable state is kept: sessions, queued and in-flight messages, retained messages,
    /// delayed wills.
    pub data_dir: PathBuf,
    /// When an acknowledged message is on disk: `fsync` (before the PUBACK/PUBREC goes out),
    /// `interval:<N>ms` (written before the acknowledgement, synced at most every N ms: a power
    /// loss loses at most N ms, a crash of the broker alone loses nothing), or `none` (memory
    /// only).
    pub durability: String,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive).
    pub log_level: String,
    /// Log line format: `text` (human-readable) or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// Seconds between publications of the `$SYS` tree (Mosquitto's `sys_interval`); 0: off.
    pub sys_interval_secs: u64,
    /// Threads that run connections and the broker; 0: one per CPU the process may use.
    pub workers: usize,
    /// More listeners, each with its own transport and security (`[[listener]]` tables).
    pub listener: Vec<ListenerConfig>,
    /// Default certificate, key and CA for TLS / WSS listeners that do not set their own.
    pub tls: TlsDefaults,
    /// Password file (argon2id, or Mosquitto's `$7$` / `$6$` lines; `tern passwd` writes it).
    /// Once set, clients without a user name are refused unless `allow_anonymous` is true.
    pub password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's format. Once set, what it does not allow is denied.
    pub acl_file: Option<PathBuf>,
    /// Allow clients without a user name. Default: yes while no password file is set, no after.
    /// A listener's own `allow_anonymous` wins.
    pub allow_anonymous: Option<bool>,
    pub limits: Limits,
    pub mqtt: Mqtt,
    pub admin: Admin,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `HOST:PORT`.
    pub bind: SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Certificate chain (PEM); default `tls.cert`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM); default `tls.key`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA bundle for client certificates; default `tls.cafile`.
    #[serde(default)]
    pub cafile: Option<PathBuf>,
    /// Require a client certificate signed by `cafile` (mTLS).
    #[serde(default)]
    pub require_certificate: bool,
    /// Take the user name from the client certificate's subject CN.
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Expect a PROXY protocol v1/v2 header (behind HAProxy or a cloud load balancer).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Accept WebSocket upgrades only on this path (default: any path).
    #[serde(default)]
    pub ws_path: Option<String>,
    /// Allow clients without a user name on this listener (default: the global setting).
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Most connections on this listener (default: only the global limit).
    #[serde(default)]
    pub max_connections: Option<usize>,
}

fn default_transport() -> String {
    "tcp".to_string()
}

/// `[tls]`: defaults inherited by TLS and WSS listeners.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsDefaults {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub cafile: Option<PathBuf>,
}

/// `log_format`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The admin HTTP listener: `/metrics`, `/healthz`, `/readyz`, the JSON API, the dashboard.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Serve the admin listener.
    pub enabled: bool,
    /// `HOST:PORT`. The default is loopback only; if the default port is taken the broker
    /// runs without the admin listener (with a warning), an address set here must be free.
    pub listen: SocketAddr,
    /// Bearer token required by `/api/` and `/metrics` (empty: none). Required when `listen`
    /// is not a loopback address. The environment variable `TERN_ADMIN_TOKEN` is used when
    /// this is empty.
    pub token: String,
}

/// Default admin listener address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9883);

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN,
            token: String::new(),
        }
    }
}

impl Admin {
    /// The token in force: the configured one, else `TERN_ADMIN_TOKEN`, else none.
    pub fn effective_token(&self) -> Option<String> {
        if !self.token.is_empty() {
            return Some(self.token.clone());
        }
        std::env::var("TERN_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    }
}

/// Resource limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most simultaneous connections; further ones are closed at accept.
    pub max_connections: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Largest packet accepted, in bytes.
    pub max_packet_size: u32,
    /// Most unacknowledged QoS 1/2 messages towards one client.
    pub max_inflight: u16,
    /// Most unreleased inbound QoS 2 messages per MQTT 5 client (Receive Maximum; MQTT 3.x
    /// clients are bound only by their packet ids).
    pub receive_maximum: u16,
    /// Most QoS 1/2 messages queued per session; the newest is dropped (and counted) beyond it.
    pub max_queued_messages: usize,
    /// Back-pressure on QoS 1/2 publishers while a connected subscriber's queue is half full, at
    /// most this many seconds at a time (0: off).
    pub backpressure_secs: u32,
    /// Most packets waiting to be written to one connection; QoS 0 messages beyond it are dropped
    /// and counted, and the broker stops reading from that client until it catches up.
    pub max_outbox_packets: usize,
    /// Most bytes (as encoded on the wire) waiting to be written to one connection; QoS 0
    /// messages beyond it are dropped and counted, like `max_outbox_packets`.
    pub max_outbox_bytes: usize,
    /// Expiry of a persistent MQTT 3.x session, in seconds after its client disconnects.
    pub v3_session_expiry_secs: u32,
    /// Upper bound of a v5 client's Session Expiry Interval, in seconds.
    pub max_session_expiry_secs: u32,
    /// Largest keep alive granted, in seconds (0: whatever the client asks).
    pub max_keep_alive_secs: u16,
    /// Most subscriptions one client may hold (SUBACK 0x97 / 0x80 beyond).
    pub max_subscriptions_per_client: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most message bytes (topic, payload, properties) queued per session (newest dropped and
    /// counted beyond).
    pub max_queued_bytes: usize,
    /// Most PUBLISH packets per second per client; 0 = no limit (DISCONNECT 0x96 beyond).
    pub max_message_rate: u32,
    /// Most retained messages stored; 0 = no limit (a new retained topic beyond is routed,
    /// not stored).
    pub max_retained_messages: usize,
    /// Most bytes of retained messages stored; 0 = no limit.
    pub max_retained_bytes: usize,
    /// Longest client id accepted, in bytes; 0 = no limit (CONNACK 0x85 / 0x02 beyond).
    pub max_client_id_len: usize,
    /// Most sessions; 0 = no limit (a new persistent session beyond: CONNACK 0x97 / 0x03).
    pub max_sessions: usize,
    /// Most memory, in bytes, the queues of all sessions hold together; beyond, queued
    /// messages are paged out to `<data_dir>/spool` (offline sessions first).
    pub queue_memory: usize,
    /// Most new connections per second from one source address (0: no limit); beyond, closed
    /// at accept.
    pub max_connection_rate_per_ip: u32,
    /// Most TLS / WebSocket / PROXY handshakes in progress; beyond, closed at accept.
    pub max_handshakes: usize,
    /// Seconds a handshake (TLS, WebSocket, PROXY header) may take.
    pub handshake_timeout_secs: u64,
    /// Seconds a client has to send the rest of a packet it has started (slow-loris defence).
    pub packet_timeout_secs: u64,
    /// Seconds the broker waits for a client that takes none of what it is sent (its socket
    /// stays full) before closing it.
    pub write_timeout_secs: u64,
}

/// Protocol features.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Mqtt {
    /// Keep retained messages.
    pub retain_available: bool,
    /// Most topic aliases an MQTT 5 client may set up towards the broker (0 disables them),
    /// and most the broker sets up towards a client.
    pub topic_alias_maximum: u16,
    /// How a shared subscription group picks the member for each message.
    pub shared_subscription_strategy: SharedStrategy,
    /// Re-send unacknowledged QoS 1/2 messages to a connected MQTT 3.x client after this many
    /// seconds (0: off; MQTT 5 clients only get re-sends on reconnect, as the spec requires).
    pub retry_interval_secs: u32,
}

/// `mqtt.shared_subscription_strategy`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SharedStrategy {
    #[default]
    RoundRobin,
    Random,
    Sticky,
    LeastInflight,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            data_dir: PathBuf::from("tern-data"),
            durability: "fsync".to_string(),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            sys_interval_secs: 10,
            workers: 0,
            listener: Vec::new(),
            tls: TlsDefaults::default(),
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            limits: Limits::default(),
            mqtt: Mqtt::default(),
            admin: Admin::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let core = tern_core::Config::default();
        Self {
            max_connections: 100_000,
            connect_timeout_secs: 10,
            max_packet_size: core.max_packet_size,
            max_inflight: core.max_inflight,
            receive_maximum: core.receive_maximum,
            max_queued_messages: core.max_queued_messages,
            backpressure_secs: core.backpressure_secs,
            max_outbox_packets: 10_000,
            max_outbox_bytes: 1024 * 1024,
            v3_session_expiry_secs: core.v3_session_expiry,
            max_session_expiry_secs: core.max_session_expiry,
            max_keep_alive_secs: core.max_keep_alive,
            max_subscriptions_per_client: core.max_subscriptions_per_client,
            max_topic_levels: core.max_topic_levels,
            max_queued_bytes: core.max_queued_bytes,
            max_message_rate: core.max_message_rate,
            max_retained_messages: core.max_retained_messages,
            max_retained_bytes: core.max_retained_bytes,
            max_client_id_len: core.max_client_id_len,
            max_sessions: core.max_sessions,
            queue_memory: core.queue_memory,
            max_connection_rate_per_ip: 50,
            max_handshakes: 1024,
            handshake_timeout_secs: 10,
            packet_timeout_secs: 30,
            write_timeout_secs: 60,
        }
    }
}

impl Default for Mqtt {
    fn default() -> Self {
        Self {
            retain_available: true,
            topic_alias_maximum: tern_core::Config::default().topic_alias_maximum,
            shared_subscription_strategy: SharedStrategy::RoundRobin,
            retry_interval_secs: 0,
        }
    }
}

/// A configuration problem, worded for the person who wrote the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Largest accepted timeout (a year).
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if let Err(e) = self.durability.parse::<tern_store::Durability>() {
            return invalid("durability", &e);
        }
        if self.workers > MAX_WORKERS {
            return invalid(
                "workers",
                &format!("at most {MAX_WORKERS} (0: one per CPU)"),
            );
        }
        if self.listen.is_empty() && self.listener.is_empty() {
            return invalid("listen", "at least one listener is needed");
        }
        for l in &self.listener {
            let transport: tern_net::Transport = match l.transport.parse() {
                Ok(t) => t,
                Err(_) => {
                    return invalid(
                        "listener.transport",
                        &format!("{:?} is not tcp, tls, ws or wss", l.transport),
                    );
                }
            };
            if transport.is_tls() {
                if l.cert.as_ref().or(self.tls.cert.as_ref()).is_none() {
                    return invalid(
                        "listener.cert",
                        &format!(
                            "TLS listener {} needs a certificate (cert, or tls.cert)",
                            l.bind
                        ),
                    );
                }
                if l.key.as_ref().or(self.tls.key.as_ref()).is_none() {
                    return invalid(
                        "listener.key",
                        &format!(
                            "TLS listener {} needs a private key (key, or tls.key)",
                            l.bind
                        ),
                    );
                }
            }
            if (l.require_certificate || l.use_identity_as_username)
                && l.cafile.as_ref().or(self.tls.cafile.as_ref()).is_none()
            {
                return invalid(
                    "listener.cafile",
                    &format!(
                        "listener {} checks client certificates and needs a CA (cafile)",
                        l.bind
                    ),
                );
            }
        }
        if self.admin.enabled
            && !self.admin.listen.ip().is_loopback()
            && self.admin.effective_token().is_none()
        {
            return invalid(
                "admin.token",
                "required when admin.listen is not a loopback address (or set TERN_ADMIN_TOKEN)",
            );
        }
        let l = &self.limits;
        if l.max_packet_size < 64 {
            return invalid("limits.max_packet_size", "must be at least 64 bytes");
        }
        if l.max_packet_size > 268_435_460 {
            return invalid(
                "limits.max_packet_size",
                "MQTT packets cannot exceed 268435460 bytes",
            );
        }
        if (1..23).contains(&l.max_client_id_len) {
            // [MQTT-3.1.3-5] A server must accept client ids of 1 to 23 bytes.
            return invalid(
                "limits.max_client_id_len",
                "must be 0 (no limit) or at least 23: MQTT requires client ids of up to 23 bytes to be accepted",
            );
        }
        if l.max_inflight == 0 {
            return invalid("limits.max_inflight", "must be at least 1");
        }
        if l.receive_maximum == 0 {
            return invalid(
                "limits.receive_maximum",
                "must be at least 1 (MQTT 5 forbids 0)",
            );
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if l.connect_timeout_secs == 0 {
            return invalid("limits.connect_timeout_secs", "must be at least 1");
        }
        if l.write_timeout_secs == 0 {
            return invalid("limits.write_timeout_secs", "must be at least 1");
        }
        // A deadline is "now + timeout": far beyond any use, it would overflow the clock.
        for (key, secs) in [
            ("limits.connect_timeout_secs", l.connect_timeout_secs),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs),
            ("limits.packet_timeout_secs", l.packet_timeout_secs),
            ("limits.write_timeout_secs", l.write_timeout_secs),
        ] {
            if secs > MAX_TIMEOUT_SECS {
                return invalid(key, "must be at most 31536000 (a year)");
            }
        }
        if l.max_outbox_packets == 0 {
            return invalid("limits.max_outbox_packets", "must be at least 1");
        }
        if l.max_outbox_bytes == 0 {
            return invalid("limits.max_outbox_bytes", "must be at least 1");
        }
        Ok(())
    }

    /// The settings as TOML, every key included (what `tern check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Every listener's settings, in order: `listen` entries (plain TCP), then `[[listener]]`.
    pub fn listener_settings(
        &self,
    ) -> Vec<(tern_net::ListenerSettings, Option<bool>, Option<usize>)> {
        let handshake_timeout =
            std::time::Duration::from_secs(self.limits.handshake_timeout_secs.max(1));
        let base = |bind, transport| {
            let mut s = tern_net::ListenerSettings::new(bind, transport);
            s.handshake_timeout = handshake_timeout;
            s.max_handshakes = self.limits.max_handshakes;
            // A WebSocket message is handed on whole: the connection cannot see an MQTT packet
            // left unfinished in one, so the transport applies the packet timeout itself.
            s.ws_message_timeout = Some(std::time::Duration::from_secs(
                self.limits.packet_timeout_secs.max(1),
            ));
            s.ws_max_message_size = s
                .ws_max_message_size
                .max(self.limits.max_packet_size as usize);
            s
        };
        let mut out: Vec<_> = self
            .listen
            .iter()
            .map(|a| (base(*a, tern_net::Transport::Tcp), None, None))
            .collect();
        for l in &self.listener {
            let transport = l.transport.parse().unwrap_or(tern_net::Transport::Tcp);
            let mut s = base(l.bind, transport);
            s.proxy_protocol = l.proxy_protocol;
            s.ws_path.clone_from(&l.ws_path);
            if transport.is_tls()
                && let (Some(cert), Some(key)) = (
                    l.cert.as_ref().or(self.tls.cert.as_ref()),
                    l.key.as_ref().or(self.tls.key.as_ref()),
                )
            {
                let mut tls = tern_net::TlsSettings::new(cert.clone(), key.clone());
                tls.ca = l.cafile.as_ref().or(self.tls.cafile.as_ref()).cloned();
                tls.require_client_cert = l.require_certificate;
                tls.cn_as_username = l.use_identity_as_username;
                s = s.with_tls(tls);
            }
            out.push((s, l.allow_anonymous, l.max_connections));
        }
        out
    }

    /// The durability mode (validated by [`Config::validate`]).
    pub fn durability(&self) -> tern_store::Durability {
        self.durability.parse().unwrap_or_default()
    }

    /// The core's settings.
    pub fn core(&self) -> tern_core::Config {
        tern_core::Config {
            max_packet_size: self.limits.max_packet_size,
            max_inflight: self.limits.max_inflight,
            receive_maximum: self.limits.receive_maximum,
            max_queued_messages: self.limits.max_queued_messages,
            backpressure_secs: self.limits.backpressure_secs,
            v3_session_expiry: self.limits.v3_session_expiry_secs,
            max_session_expiry: self.limits.max_session_expiry_secs,
            max_keep_alive: self.limits.max_keep_alive_secs,
            max_subscriptions_per_client: self.limits.max_subscriptions_per_client,
            max_topic_levels: self.limits.max_topic_levels,
            max_queued_bytes: self.limits.max_queued_bytes,
            max_message_rate: self.limits.max_message_rate,
            max_retained_messages: self.limits.max_retained_messages,
            max_retained_bytes: self.limits.max_retained_bytes,
            max_client_id_len: self.limits.max_client_id_len,
            max_sessions: self.limits.max_sessions,
            queue_memory: self.limits.queue_memory,
            // The CONNECT's own deadline, once more for the exchange that follows it.
            auth_timeout_secs: u32::try_from(self.limits.connect_timeout_secs).unwrap_or(u32::MAX),
            retain_available: self.mqtt.retain_available,
            topic_alias_maximum: self.mqtt.topic_alias_maximum,
            shared_strategy: match self.mqtt.shared_subscription_strategy {
                SharedStrategy::RoundRobin => tern_core::SharedStrategy::RoundRobin,
                SharedStrategy::Random => tern_core::SharedStrategy::Random,
                SharedStrategy::Sticky => tern_core::SharedStrategy::Sticky,
                SharedStrategy::LeastInflight => tern_core::SharedStrategy::LeastInflight,
            },
            retry_interval: self.mqtt.retry_interval_secs,
            persistence: self.durability() != tern_store::Durability::None,
            ..tern_core::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[limits]\nmax_inflite = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_inflite"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml("[limits]\nmax_inflight = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_inflight"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err = Config::from_toml("[limits]\nreceive_maximum = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.receive_maximum"), "{err}");
    }

    #[test]
    fn a_client_id_limit_under_23_bytes_is_refused() {
        let err = Config::from_toml("[limits]\nmax_client_id_len = 22\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_client_id_len"), "{err}");
        Config::from_toml("[limits]\nmax_client_id_len = 23\n").unwrap();
        Config::from_toml("[limits]\nmax_client_id_len = 0\n").unwrap();
    }

    #[test]
    fn timeouts_are_bounded() {
        for (text, key) in [
            (
                "[limits]\nwrite_timeout_secs = 0\n",
                "limits.write_timeout_secs",
            ),
            (
                "[limits]\nwrite_timeout_secs = 18446744073709551615\n",
                "limits.write_timeout_secs",
            ),
            (
                "[limits]\nconnect_timeout_secs = 31536001\n",
                "limits.connect_timeout_secs",
            ),
            (
                "[limits]\npacket_timeout_secs = 31536001\n",
                "limits.packet_timeout_secs",
            ),
            (
                "[limits]\nhandshake_timeout_secs = 31536001\n",
                "limits.handshake_timeout_secs",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        Config::from_toml("[limits]\nwrite_timeout_secs = 31536000\n").unwrap();
    }

    #[test]
    fn unknown_strategy_is_named() {
        let err = Config::from_toml("[mqtt]\nshared_subscription_strategy = \"fastest\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shared_subscription_strategy") && err.contains("round_robin"),
            "{err}"
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../tern.example.toml");
        Config::from_toml(text).unwrap();
    }

    #[test]
    fn admin_beyond_loopback_needs_a_token() {
        // TERN_ADMIN_TOKEN in the environment would make the file valid.
        if std::env::var_os("TERN_ADMIN_TOKEN").is_none() {
            let e = Config::from_toml("[admin]\nlisten = \"0.0.0.0:9883\"\n").unwrap_err();
            assert!(e.to_string().contains("admin.token"), "{e}");
        }
        let c = Config::from_toml("[admin]\nlisten = \"0.0.0.0:9883\"\ntoken = \"t\"\n").unwrap();
        assert_eq!(c.admin.effective_token().as_deref(), Some("t"));
        let c = Config::from_toml("log_format = \"json\"\nsys_interval_secs = 0\n").unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.sys_interval_secs, 0);
        assert!(Config::from_toml("log_format = \"xml\"\n").is_err());
        assert_eq!(Config::from_toml("workers = 1\n").unwrap().workers, 1);
        let e = Config::from_toml("workers = 1025\n").unwrap_err();
        assert!(e.to_string().contains("`workers`"), "{e}");
    }

    #[test]
    fn effective_settings_print_as_toml_that_reads_back() {
        let c = Config::default();
        let text = c.to_toml();
        assert!(
            text.contains("[admin]") && text.contains("sys_interval_secs = 10"),
            "{text}"
        );
        assert_eq!(Config::from_toml(&text).unwrap(), c);
    }
}
