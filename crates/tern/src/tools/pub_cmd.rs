//! `tern pub`: publish one message, a file, standard input, or one message per line.

use super::common::exit_codes_help;
use super::common::{
    ConnArgs, Failure, PayloadArgs, check_topic_name, exit, parse_properties, parse_qos, run_tool,
};
use bytes::Bytes;
use clap::Args;
use std::collections::VecDeque;
use std::time::Duration;
use tern_client::{Client, Message, PublishToken};
use tern_codec::{Disconnect, ProtocolVersion, QoS};
use tokio::io::AsyncBufReadExt;

/// `tern pub` options.
#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    disable_version_flag = true,
    about = "Publish messages (like mosquitto_pub)",
    after_help = concat!(
        "Publish a message, a file, standard input, or one message per line of standard input, \
to an MQTT broker (any broker: tern, Mosquitto, ...). With QoS 1 or 2, tern pub waits for the \
broker's acknowledgements before it exits.",
        "\n\n",
        "Examples:\n",
        "  tern pub -t sensors/1/temp -m 21.5\n",
        "  tern pub -t config/site -f site.json -q 1 -r\n",
        "  tail -f app.log | tern pub -t logs/app -l\n",
        "  tern pub -t status/x -r -n              # clear a retained message\n",
        "  tern pub -V 5 -t t -m hi -D publish user-property origin test\n",
        "\n",
        exit_codes_help!(),
    )
)]
pub struct PubArgs {
    /// Topic to publish to.
    #[arg(short = 't', long, value_name = "TOPIC", help_heading = "Message")]
    pub topic: Option<String>,

    #[command(flatten)]
    pub payload: PayloadArgs,

    /// Read standard input and send one message per line (without the line end). Empty lines
    /// are sent as empty messages.
    #[arg(
        short = 'l',
        long = "stdin-line",
        conflicts_with_all = ["message", "file", "stdin_file", "null_message"],
        help_heading = "Message"
    )]
    pub stdin_line: bool,

    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos, value_name = "QOS", help_heading = "Message")]
    pub qos: QoS,

    /// Retain the message: the broker keeps it and sends it to future subscribers.
    #[arg(short = 'r', long, help_heading = "Message")]
    pub retain: bool,

    /// Publish the message (-m, -f, -s, -n) this many times.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Message")]
    pub repeat: u32,

    /// Seconds between repeated publishes (fractions allowed).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "SECONDS",
        help_heading = "Message"
    )]
    pub repeat_delay: f64,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// At most this many QoS 1/2 publishes waiting for their acknowledgement in line mode (the
/// broker's Receive Maximum may lower it).
const LINE_WINDOW: usize = 1024;

/// `tern pub`.
pub async fn publish(args: PubArgs) -> anyhow::Result<u8> {
    let quiet = args.conn.quiet;
    run_tool("pub", quiet, run(args)).await
}

async fn run(args: PubArgs) -> Result<u8, Failure> {
    let version = args.conn.version(ProtocolVersion::V3_1_1);
    let props = parse_properties(&args.conn.property, version)?;
    let topic = args
        .topic
        .clone()
        .ok_or_else(|| Failure::usage("a topic is needed (-t TOPIC)"))?;
    check_topic_name(&topic, "-t")?;
    if !args.stdin_line && !args.payload.given() {
        return Err(Failure::usage(
            "a message is needed: -m MESSAGE, -f FILE, -s (stdin), -l (stdin lines) or -n (empty)",
        ));
    }
    if !(args.repeat_delay.is_finite() && args.repeat_delay >= 0.0) {
        return Err(Failure::usage("--repeat-delay must be 0 or more seconds"));
    }
    let opts = args.conn.connect_options("pub", version, &props)?;
    // Read a file or stdin before connecting, so a bad file does not leave a connection behind.
    let payload = args.payload.load().await?;
    let (client, _ack) = Client::connect(&opts).await?;
    let template = Message::new(&topic, Bytes::new())
        .qos(args.qos)
        .retain(args.retain)
        .properties(props.publish.clone());

    let result = async {
        if args.stdin_line {
            publish_lines(&client, &template).await
        } else {
            let payload = payload.unwrap_or_default();
            let delay = Duration::from_secs_f64(args.repeat_delay);
            for i in 0..args.repeat.max(1) {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mut m = template.clone();
                m.payload = payload.clone();
                client.publish(m).await?;
            }
            Ok(())
        }
    }
    .await;
    match result {
        Ok(()) => {
            client
                .disconnect_with(Disconnect {
                    reason: 0,
                    properties: props.disconnect.clone(),
                })
                .await?;
            Ok(exit::OK)
        }
        Err(e) => {
            let _ = client.disconnect().await;
            Err(e)
        }
    }
}

async fn publish_lines(client: &Client, template: &Message) -> Result<(), Failure> {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut pending: VecDeque<PublishToken> = VecDeque::new();
    let mut line = Vec::new();
    // Ctrl-C ends the input: what was read is still acknowledged and the exit is clean.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        line.clear();
        let n = tokio::select! {
            _ = &mut interrupted => 0,
            r = stdin.read_until(b'\n', &mut line) => {
                r.map_err(|e| Failure::error(format!("cannot read standard input: {e}")))?
            }
            // Notice a lost connection while waiting for input.
            _ = client.wait_closed() => {
                return Err(Failure::from(tern_client::ClientError::ConnectionLost(
                    client.close_reason().unwrap_or(tern_client::CloseReason::ServerClosed),
                )));
            }
        };
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let mut m = template.clone();
        m.payload = Bytes::copy_from_slice(&line);
        let token = client.start_publish(m).await?;
        if template.qos != QoS::AtMostOnce {
            pending.push_back(token);
            if pending.len() >= LINE_WINDOW
                && let Some(t) = pending.pop_front()
            {
                t.wait().await?;
            }
        }
    }
    for t in pending {
        t.wait().await?;
    }
    Ok(())
}
