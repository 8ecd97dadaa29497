//! What `tern pub`, `tern sub` and `tern rr` share: connection options, MQTT 5 properties
//! (`-D`), message output, `--debug` packet tracing, errors and exit codes.

use bytes::Bytes;
use clap::{ArgAction, Args};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tern_client::{ClientError, ConnectOptions, Direction, Message, TlsOptions};
use tern_codec::{ByteStr, Packet, Properties, ProtocolVersion, QoS, Will};

/// Exit codes of the tools.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other error: an unreadable file, a publish or subscription the broker refused, ...
    pub const ERROR: u8 = 1;
    /// The command line is wrong (clap uses the same code).
    pub const USAGE: u8 = 2;
    /// The broker could not be reached, the TLS handshake failed, or the connection was lost.
    pub const CONNECT_FAILED: u8 = 3;
    /// The broker refused the connection (CONNACK with a non-zero code).
    pub const REFUSED: u8 = 4;
    /// A time limit (`-W`) ran out.
    pub const TIMEOUT: u8 = 5;
}

/// The exit code table printed at the end of each tool's `--help` (a macro, for `concat!`).
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  success
  1  error (unreadable input, a publish or subscription refused by the broker, ...)
  2  usage error (bad command line)
  3  could not connect (TCP, DNS, TLS) or the connection was lost
  4  the broker refused the connection (CONNACK code != 0)
  5  timed out (-W)"
    };
}
pub(crate) use exit_codes_help;

/// An error that ends a tool: one line on stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self::new(exit::ERROR, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Refused { .. } => exit::REFUSED,
            ClientError::Timeout => exit::TIMEOUT,
            e if e.is_connection_failure() => exit::CONNECT_FAILED,
            _ => exit::ERROR,
        };
        Self::new(code, e.to_string())
    }
}

/// Runs a tool body, printing its failure as one line `tern TOOL: message`.
pub async fn run_tool(
    tool: &str,
    quiet: bool,
    body: impl std::future::Future<Output = Result<u8, Failure>>,
) -> anyhow::Result<u8> {
    match body.await {
        Ok(code) => Ok(code),
        Err(f) => {
            if !quiet {
                eprintln!("tern {tool}: {}", f.message);
            }
            Ok(f.code)
        }
    }
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s.to_ascii_lowercase().as_str() {
        "5" | "5.0" | "v5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "3.1.1" | "4" | "v311" | "mqttv311" => Ok(ProtocolVersion::V3_1_1),
        "31" | "3.1" | "3" | "v31" | "mqttv31" => Ok(ProtocolVersion::V3_1),
        _ => Err("expected 5, 311 or 31 (or mqttv5, mqttv311, mqttv31)".into()),
    }
}

pub(crate) fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| "expected 0, 1 or 2".into())
}

fn parse_expiry(s: &str) -> Result<u32, String> {
    match s {
        "-1" | "∞" | "inf" | "never" => Ok(u32::MAX),
        _ => s
            .parse::<u32>()
            .map_err(|_| "expected seconds (0-4294967295), or -1 for never".into()),
    }
}

/// Connection options shared by every tool.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Broker host name or address.
    #[arg(
        short = 'h',
        long,
        default_value = "localhost",
        value_name = "HOST",
        help_heading = "Connection"
    )]
    pub host: String,

    /// Broker port [default: 1883, or 8883 with TLS].
    #[arg(short, long, value_name = "PORT", help_heading = "Connection")]
    pub port: Option<u16>,

    /// MQTT version: 5, 311 or 31 (also mqttv5, mqttv311, mqttv31) [default: 311 for pub and
    /// sub, 5 for rr].
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", value_parser = parse_version, help_heading = "Connection")]
    pub protocol_version: Option<ProtocolVersion>,

    /// Client identifier [default: tern_TOOL_ followed by the process id].
    #[arg(
        short = 'i',
        long = "id",
        value_name = "ID",
        help_heading = "Connection"
    )]
    pub id: Option<String>,

    /// Client identifier prefix: the id is PREFIX followed by the process id.
    #[arg(
        short = 'I',
        long = "id-prefix",
        value_name = "PREFIX",
        conflicts_with = "id",
        help_heading = "Connection"
    )]
    pub id_prefix: Option<String>,

    /// Persistent session: clear Clean Session (3.x) / Clean Start (5), so the broker keeps the
    /// session and its subscriptions and queues messages while the client is away. Needs -i.
    #[arg(
        short = 'c',
        long = "disable-clean-session",
        help_heading = "Connection"
    )]
    pub disable_clean_session: bool,

    /// MQTT 5 session expiry interval in seconds; -1 for never [default: never with -c, else 0].
    #[arg(short = 'x', long = "session-expiry-interval", value_name = "SECONDS", value_parser = parse_expiry, allow_hyphen_values = true, help_heading = "Connection")]
    pub session_expiry: Option<u32>,

    /// Keep alive in seconds; a PINGREQ is sent after this long without traffic (0: off).
    #[arg(
        short = 'k',
        long,
        default_value_t = 60,
        value_name = "SECONDS",
        help_heading = "Connection"
    )]
    pub keepalive: u16,

    /// Seconds to wait for the TCP connection, TLS handshake and CONNACK.
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECONDS",
        help_heading = "Connection"
    )]
    pub connect_timeout: u64,

    /// User name.
    #[arg(short = 'u', long, value_name = "USER", help_heading = "Connection")]
    pub username: Option<String>,

    /// Password.
    #[arg(
        short = 'P',
        long = "pw",
        visible_alias = "password",
        value_name = "PASSWORD",
        help_heading = "Connection"
    )]
    pub password: Option<String>,

    /// Topic of the will, published by the broker if the connection ends without DISCONNECT.
    #[arg(long, value_name = "TOPIC", help_heading = "Will")]
    pub will_topic: Option<String>,

    /// Payload of the will [default: empty].
    #[arg(
        long,
        value_name = "PAYLOAD",
        requires = "will_topic",
        help_heading = "Will"
    )]
    pub will_payload: Option<String>,

    /// QoS of the will.
    #[arg(long, value_name = "QOS", value_parser = parse_qos, requires = "will_topic", help_heading = "Will")]
    pub will_qos: Option<QoS>,

    /// Retain the will.
    #[arg(long, requires = "will_topic", help_heading = "Will")]
    pub will_retain: bool,

    /// PEM file of the CA certificates to trust; turns TLS on.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub cafile: Option<PathBuf>,

    /// PEM file of the client certificate, for brokers that require one.
    #[arg(long, value_name = "FILE", requires = "key", help_heading = "TLS")]
    pub cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(long, value_name = "FILE", requires = "cert", help_heading = "TLS")]
    pub key: Option<PathBuf>,

    /// Do not check that the server certificate names the host (the chain is still checked).
    /// Unsafe outside tests.
    #[arg(long, help_heading = "TLS")]
    pub insecure: bool,

    /// MQTT 5 property: COMMAND NAME VALUE, or COMMAND user-property KEY VALUE. Commands:
    /// connect, publish, subscribe, unsubscribe, disconnect, will. Repeatable. Example:
    /// -D publish user-property origin sensor-7
    #[arg(
        short = 'D',
        long = "property",
        num_args = 3..=4,
        value_names = ["COMMAND", "NAME", "VALUE"],
        action = ArgAction::Append,
        help_heading = "MQTT 5"
    )]
    pub property: Vec<String>,

    /// Print every packet sent and received on stderr.
    #[arg(short = 'd', long, help_heading = "Output")]
    pub debug: bool,

    /// Do not print error messages.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,

    /// Print help.
    #[arg(long, action = ArgAction::HelpLong)]
    pub help: Option<bool>,
}

/// MQTT 5 properties from `-D`, per packet.
#[derive(Debug, Clone, Default)]
pub struct PropertySet {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, Failure> {
    v.parse::<T>()
        .map_err(|_| Failure::usage(format!("-D {name}: invalid number {v:?}")))
}

/// Parses the `-D COMMAND NAME VALUE [VALUE]` groups.
pub fn parse_properties(raw: &[String], version: ProtocolVersion) -> Result<PropertySet, Failure> {
    let mut set = PropertySet::default();
    // clap hands over the values of every -D in one list: regroup them (user-property takes
    // two values, every other property one).
    let mut groups = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let n = if rest.get(1).map(String::as_str) == Some("user-property") {
            4
        } else {
            3
        };
        if rest.len() < n {
            return Err(Failure::usage(
                "-D needs COMMAND NAME VALUE (or COMMAND user-property KEY VALUE)",
            ));
        }
        groups.push(&rest[..n]);
        rest = &rest[n..];
    }
    for group in groups {
        let (cmd, name, values) = match group {
            [cmd, name, values @ ..] => (cmd.as_str(), name.as_str(), values),
            _ => return Err(Failure::usage("-D needs COMMAND NAME VALUE")),
        };
        if !version.is_v5() {
            return Err(Failure::usage(
                "-D/--property needs MQTT 5 (add -V 5)".to_string(),
            ));
        }
        let props = match cmd {
            "connect" => &mut set.connect,
            "publish" => &mut set.publish,
            "subscribe" => &mut set.subscribe,
            "unsubscribe" => &mut set.unsubscribe,
            "disconnect" => &mut set.disconnect,
            "will" => &mut set.will,
            _ => {
                return Err(Failure::usage(format!(
                    "-D: unknown command {cmd:?} (connect, publish, subscribe, unsubscribe, disconnect, will)"
                )));
            }
        };
        let allowed: &[&str] = match name {
            "user-property" => &[
                "connect",
                "publish",
                "subscribe",
                "unsubscribe",
                "disconnect",
                "will",
            ],
            "content-type"
            | "correlation-data"
            | "message-expiry-interval"
            | "payload-format-indicator"
            | "response-topic" => &["publish", "will"],
            "will-delay-interval" => &["will"],
            "session-expiry-interval" => &["connect", "disconnect"],
            "receive-maximum"
            | "maximum-packet-size"
            | "topic-alias-maximum"
            | "request-problem-information"
            | "request-response-information" => &["connect"],
            "subscription-identifier" => &["subscribe"],
            "reason-string" => &["disconnect"],
            _ => {
                return Err(Failure::usage(format!(
                    "-D: unknown or unsupported property {name:?}"
                )));
            }
        };
        if !allowed.contains(&cmd) {
            return Err(Failure::usage(format!(
                "-D: {name} is not valid for {cmd} (valid for: {})",
                allowed.join(", ")
            )));
        }
        let want = if name == "user-property" { 2 } else { 1 };
        if values.len() != want {
            return Err(Failure::usage(if want == 2 {
                format!("-D {cmd} user-property needs KEY VALUE")
            } else {
                format!("-D {cmd} {name} needs exactly one VALUE")
            }));
        }
        let v = values[0].as_str();
        match name {
            "user-property" => props
                .user_properties
                .push((ByteStr::from(v), ByteStr::from(values[1].as_str()))),
            "content-type" => props.content_type = Some(ByteStr::from(v)),
            "correlation-data" => props.correlation_data = Some(Bytes::from(v.to_owned())),
            "response-topic" => props.response_topic = Some(ByteStr::from(v)),
            "message-expiry-interval" => props.message_expiry_interval = Some(num(name, v)?),
            "payload-format-indicator" => {
                props.payload_format_indicator = Some(match v {
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(Failure::usage("-D payload-format-indicator is 0 or 1")),
                })
            }
            "will-delay-interval" => props.will_delay_interval = Some(num(name, v)?),
            "session-expiry-interval" => props.session_expiry_interval = Some(num(name, v)?),
            "receive-maximum" => props.receive_maximum = Some(num(name, v)?),
            "maximum-packet-size" => props.maximum_packet_size = Some(num(name, v)?),
            "topic-alias-maximum" => props.topic_alias_maximum = Some(num(name, v)?),
            "request-problem-information" => {
                props.request_problem_information = Some(num(name, v)?)
            }
            "request-response-information" => {
                props.request_response_information = Some(num(name, v)?)
            }
            "subscription-identifier" => {
                let id: u32 = num(name, v)?;
                if id == 0 || id > 268_435_455 {
                    return Err(Failure::usage(
                        "-D subscription-identifier is 1 to 268435455",
                    ));
                }
                props.subscription_identifiers = vec![id];
            }
            "reason-string" => props.reason_string = Some(ByteStr::from(v)),
            _ => unreachable!("checked above"),
        }
    }
    Ok(set)
}

impl ConnArgs {
    /// The protocol version, with the tool's default.
    pub fn version(&self, default: ProtocolVersion) -> ProtocolVersion {
        self.protocol_version.unwrap_or(default)
    }

    /// The client id: `-i`, `-I` + pid, or `tern_TOOL_` + pid.
    pub fn client_id(&self, tool: &str) -> String {
        match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) => format!("tern_{tool}_{}", std::process::id()),
        }
    }

    /// Builds the connect options; `props` from [`parse_properties`].
    pub fn connect_options(
        &self,
        tool: &str,
        version: ProtocolVersion,
        props: &PropertySet,
    ) -> Result<ConnectOptions, Failure> {
        if self.disable_clean_session && self.id.is_none() && self.id_prefix.is_none() {
            return Err(Failure::usage(
                "-c (persistent session) needs a client id (-i ID)",
            ));
        }
        if self.session_expiry.is_some() && !version.is_v5() {
            return Err(Failure::usage(
                "-x/--session-expiry-interval needs MQTT 5 (add -V 5)",
            ));
        }
        if self.password.is_some() && self.username.is_none() && !version.is_v5() {
            return Err(Failure::usage(
                "a password (-P) needs a user name (-u) before MQTT 5",
            ));
        }
        if self.cafile.is_none() && (self.cert.is_some() || self.insecure) {
            return Err(Failure::usage(
                "TLS options need --cafile (the CA certificates to verify the broker with)",
            ));
        }
        if let Some(t) = &self.will_topic {
            check_topic_name(t, "--will-topic")?;
        }
        let tls = self.cafile.as_ref().map(|ca| TlsOptions {
            ca_file: Some(ca.clone()),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure: self.insecure,
            server_name: None,
        });
        let port = self.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
        let client_id = self.client_id(tool);
        let session_expiry = if version.is_v5() {
            Some(
                self.session_expiry
                    .or(props.connect.session_expiry_interval)
                    .unwrap_or(if self.disable_clean_session {
                        u32::MAX
                    } else {
                        0
                    }),
            )
        } else {
            None
        };
        let mut opts = ConnectOptions::new(self.host.clone(), port)
            .version(version)
            .client_id(client_id.clone())
            .clean_start(!self.disable_clean_session);
        opts.session_expiry = session_expiry;
        opts.keep_alive = self.keepalive;
        opts.connect_timeout = Duration::from_secs(self.connect_timeout.max(1));
        opts.username.clone_from(&self.username);
        opts.password = self.password.clone().map(Bytes::from);
        opts.properties = props.connect.clone();
        opts.tls = tls;
        opts.will = self.will_topic.as_ref().map(|t| Will {
            topic: ByteStr::from(t.as_str()),
            payload: Bytes::from(self.will_payload.clone().unwrap_or_default()),
            qos: self.will_qos.unwrap_or_default(),
            retain: self.will_retain,
            properties: props.will.clone(),
        });
        if self.debug {
            let id = if client_id.is_empty() {
                "(auto)".to_owned()
            } else {
                client_id
            };
            opts.trace = Some(Arc::new(move |dir, p| {
                eprintln!("{}", describe_packet(&id, dir, p));
            }));
        }
        Ok(opts)
    }
}

/// Rejects empty topics and wildcards in a topic name.
pub fn check_topic_name(t: &str, what: &str) -> Result<(), Failure> {
    if t.is_empty() {
        return Err(Failure::usage(format!(
            "{what}: the topic must not be empty"
        )));
    }
    if t.contains(['+', '#']) {
        return Err(Failure::usage(format!(
            "{what}: invalid topic {t:?}: a topic name cannot contain + or #"
        )));
    }
    Ok(())
}

/// Rejects invalid topic filters.
pub fn check_topic_filter(f: &str, what: &str) -> Result<(), Failure> {
    tern_topic::validate_topic_filter(f)
        .map_err(|e| Failure::usage(format!("{what}: invalid topic filter {f:?}: {e}")))
}

/// One line of `--debug` output, in the spirit of mosquitto's.
pub fn describe_packet(id: &str, dir: Direction, p: &Packet) -> String {
    let verb = match dir {
        Direction::Sent => "sending",
        Direction::Received => "received",
    };
    let detail = match p {
        Packet::Connect(c) => format!(
            " (v{}, c{}, k{}, id {:?})",
            c.protocol.level(),
            u8::from(c.clean_start),
            c.keep_alive,
            c.client_id.as_str()
        ),
        Packet::ConnAck(a) => format!(
            " (session present {}, code 0x{:02X})",
            a.session_present, a.code
        ),
        Packet::Publish(pb) => format!(
            " (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(pb.dup),
            pb.qos as u8,
            u8::from(pb.retain),
            pb.packet_id.unwrap_or(0),
            pb.topic,
            pb.payload.len()
        ),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            format!(" (m{}, rc 0x{:02X})", a.packet_id, a.reason)
        }
        Packet::Subscribe(s) => {
            let mut d = format!(" (m{}", s.packet_id);
            for (f, o) in &s.filters {
                let _ = write!(d, ", '{f}' q{}", o.qos as u8);
            }
            d + ")"
        }
        Packet::SubAck(s) => format!(" (m{}, codes {:?})", s.packet_id, s.reasons),
        Packet::Unsubscribe(u) => format!(" (m{}, {:?})", u.packet_id, u.filters),
        Packet::UnsubAck(u) => format!(" (m{})", u.packet_id),
        Packet::Disconnect(d) => format!(" (rc 0x{:02X})", d.reason),
        _ => String::new(),
    };
    format!("Client {id} {verb} {}{detail}", p.name())
}

/// How `tern sub` and `tern rr` print received messages.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the topic before the payload: "TOPIC PAYLOAD".
    #[arg(short = 'v', long, help_heading = "Output")]
    pub verbose: bool,

    /// Do not end each message with a newline.
    #[arg(short = 'N', long = "no-eol", help_heading = "Output")]
    pub no_eol: bool,

    /// Print one JSON object per message: topic, qos, retain, payload (UTF-8 text, or base64
    /// with "payload_encoding":"base64"), payloadlen and the MQTT 5 properties.
    #[arg(long, conflicts_with = "format", help_heading = "Output")]
    pub json: bool,

    /// With --json: indent the JSON.
    #[arg(long, requires = "json", help_heading = "Output")]
    pub pretty: bool,

    /// Output format: %t topic, %p payload, %q QoS, %r retain, %l payload length, %m message id,
    /// %x / %X payload in hex, %j JSON, %U Unix time, %C content type, %D correlation data,
    /// %E message expiry, %F payload format, %P user properties, %R response topic, %S
    /// subscription ids, %% a percent sign; \n \t \\ \0 escapes. Ends with a newline unless -N.
    #[arg(short = 'F', long, value_name = "FORMAT", help_heading = "Output")]
    pub format: Option<String>,
}

fn hex(data: &[u8], upper: bool) -> String {
    data.iter().fold(String::new(), |mut s, b| {
        let _ = if upper {
            write!(s, "{b:02X}")
        } else {
            write!(s, "{b:02x}")
        };
        s
    })
}

/// The JSON object of a received message (properties rendered as the admin API does).
pub fn message_json(m: &Message) -> serde_json::Value {
    let (payload, encoding) = crate::admin::json::text_or_base64(&m.payload);
    serde_json::json!({
        "topic": m.topic.as_str(),
        "qos": m.qos as u8,
        "retain": m.retain,
        "payloadlen": m.payload.len(),
        "payload": payload,
        "payload_encoding": encoding,
        "properties": crate::admin::json::properties(&m.properties),
    })
}

/// Renders `-F FORMAT` for one message.
fn render_format(fmt: &str, m: &Message, out: &mut Vec<u8>) {
    let mut chars = fmt.chars().peekable();
    let push = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => push(out, &m.topic),
                Some('p') => out.extend_from_slice(&m.payload),
                Some('q') => push(out, &(m.qos as u8).to_string()),
                Some('r') => push(out, if m.retain { "1" } else { "0" }),
                Some('l') => push(out, &m.payload.len().to_string()),
                Some('m') => push(out, "0"),
                Some('x') => push(out, &hex(&m.payload, false)),
                Some('X') => push(out, &hex(&m.payload, true)),
                Some('j') => push(out, &message_json(m).to_string()),
                Some('U') => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    push(out, &format!("{}.{:09}", now.as_secs(), now.subsec_nanos()));
                }
                Some('C') => {
                    if let Some(v) = &m.properties.content_type {
                        push(out, v);
                    }
                }
                Some('D') => {
                    if let Some(v) = &m.properties.correlation_data {
                        out.extend_from_slice(v);
                    }
                }
                Some('E') => {
                    if let Some(v) = m.properties.message_expiry_interval {
                        push(out, &v.to_string());
                    }
                }
                Some('F') => {
                    if let Some(v) = m.properties.payload_format_indicator {
                        push(out, &v.to_string());
                    }
                }
                Some('P') => {
                    let s: Vec<String> = m
                        .properties
                        .user_properties
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    push(out, &s.join(" "));
                }
                Some('R') => {
                    if let Some(v) = &m.properties.response_topic {
                        push(out, v);
                    }
                }
                Some('S') => {
                    let s: Vec<String> = m
                        .properties
                        .subscription_identifiers
                        .iter()
                        .map(u32::to_string)
                        .collect();
                    push(out, &s.join(","));
                }
                Some('%') => push(out, "%"),
                Some(other) => {
                    out.push(b'%');
                    push(out, other.encode_utf8(&mut [0; 4]));
                }
                None => out.push(b'%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push(b'\n'),
                Some('t') => out.push(b'\t'),
                Some('r') => out.push(b'\r'),
                Some('0') => out.push(0),
                Some('e') => out.push(0x1b),
                Some('\\') => out.push(b'\\'),
                Some(other) => {
                    out.push(b'\\');
                    push(out, other.encode_utf8(&mut [0; 4]));
                }
                None => out.push(b'\\'),
            },
            c => push(out, c.encode_utf8(&mut [0; 4])),
        }
    }
}

impl OutputArgs {
    /// The bytes printed for one message.
    pub fn render(&self, m: &Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(m.payload.len() + m.topic.len() + 2);
        if self.json {
            let v = message_json(m);
            let s = if self.pretty {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            }
            .unwrap_or_default();
            out.extend_from_slice(s.as_bytes());
        } else if let Some(fmt) = &self.format {
            render_format(fmt, m, &mut out);
        } else if self.verbose {
            out.extend_from_slice(m.topic.as_bytes());
            out.push(b' ');
            if m.payload.is_empty() {
                out.extend_from_slice(b"(null)");
            } else {
                out.extend_from_slice(&m.payload);
            }
        } else {
            out.extend_from_slice(&m.payload);
        }
        if !self.no_eol {
            out.push(b'\n');
        }
        out
    }

    /// Prints one message on stdout and flushes.
    pub fn print(&self, m: &Message) -> Result<(), Failure> {
        let bytes = self.render(m);
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&bytes)
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::error(format!("cannot write to stdout: {e}")))
    }
}

/// Where a message payload comes from (`tern pub` and `tern rr`).
#[derive(Debug, Clone, Args)]
#[group(multiple = false)]
pub struct PayloadArgs {
    /// The message payload.
    #[arg(
        short = 'm',
        long,
        value_name = "MESSAGE",
        help_heading = "Message",
        allow_hyphen_values = true
    )]
    pub message: Option<String>,

    /// Send the contents of FILE as the message.
    #[arg(short = 'f', long, value_name = "FILE", help_heading = "Message")]
    pub file: Option<PathBuf>,

    /// Send all of standard input as one message.
    #[arg(short = 's', long = "stdin-file", help_heading = "Message")]
    pub stdin_file: bool,

    /// Send an empty (zero-length) message.
    #[arg(short = 'n', long = "null-message", help_heading = "Message")]
    pub null_message: bool,
}

impl PayloadArgs {
    /// True when one of the options was given.
    pub fn given(&self) -> bool {
        self.message.is_some() || self.file.is_some() || self.stdin_file || self.null_message
    }

    /// Reads the payload; `None` when no option was given.
    pub async fn load(&self) -> Result<Option<Bytes>, Failure> {
        use tokio::io::AsyncReadExt;
        if let Some(m) = &self.message {
            return Ok(Some(Bytes::from(m.clone())));
        }
        if let Some(f) = &self.file {
            let data = std::fs::read(f)
                .map_err(|e| Failure::error(format!("cannot read {}: {e}", f.display())))?;
            return Ok(Some(Bytes::from(data)));
        }
        if self.stdin_file {
            let mut data = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut data)
                .await
                .map_err(|e| Failure::error(format!("cannot read standard input: {e}")))?;
            return Ok(Some(Bytes::from(data)));
        }
        if self.null_message {
            return Ok(Some(Bytes::new()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(crate::admin::json::base64_encode(b""), "");
        assert_eq!(crate::admin::json::base64_encode(b"f"), "Zg==");
        assert_eq!(crate::admin::json::base64_encode(b"fo"), "Zm8=");
        assert_eq!(crate::admin::json::base64_encode(b"foo"), "Zm9v");
        assert_eq!(crate::admin::json::base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(crate::admin::json::base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(crate::admin::json::base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(crate::admin::json::base64_encode(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("5"), Ok(ProtocolVersion::V5));
        assert_eq!(parse_version("mqttv311"), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(parse_version("31"), Ok(ProtocolVersion::V3_1));
        assert!(parse_version("6").is_err());
    }

    #[test]
    fn properties_parse_and_check() {
        let raw: Vec<String> = [
            "publish",
            "user-property",
            "k",
            "v",
            "connect",
            "receive-maximum",
            "10",
            "will",
            "will-delay-interval",
            "5",
        ]
        .map(String::from)
        .to_vec();
        let set = parse_properties(&raw, ProtocolVersion::V5).unwrap();
        assert_eq!(set.publish.user_properties.len(), 1);
        assert_eq!(set.connect.receive_maximum, Some(10));
        assert_eq!(set.will.will_delay_interval, Some(5));
        assert!(parse_properties(&raw, ProtocolVersion::V3_1_1).is_err());
        let bad: Vec<String> = ["connect", "content-type", "x"].map(String::from).to_vec();
        assert!(parse_properties(&bad, ProtocolVersion::V5).is_err());
    }

    #[test]
    fn format_renders() {
        let mut m = Message::new("a/b", "hi").qos(QoS::AtLeastOnce);
        m.retain = true;
        let o = OutputArgs {
            verbose: false,
            no_eol: false,
            json: false,
            pretty: false,
            format: Some("%t|%p|%q|%r|%l|%x|%%\\t".into()),
        };
        assert_eq!(o.render(&m), b"a/b|hi|1|1|2|6869|%\t\n");
        let j = message_json(&Message::new("t", vec![0xffu8, 0]));
        assert_eq!(j["payload_encoding"], "base64");
        assert_eq!(j["payload"], "/wA=");
    }
}
