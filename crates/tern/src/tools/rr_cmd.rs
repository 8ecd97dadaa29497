//! `tern rr`: MQTT 5 request/response. Subscribes to the response topic, publishes the request
//! with Response Topic and Correlation Data, and prints the first response that carries the
//! same correlation data.

use super::common::exit_codes_help;
use super::common::{
    ConnArgs, Failure, OutputArgs, PayloadArgs, check_topic_name, exit, parse_properties,
    parse_qos, run_tool,
};
use bytes::Bytes;
use clap::Args;
use std::time::Duration;
use tern_client::{Client, Message};
use tern_codec::{ByteStr, Disconnect, ProtocolVersion, QoS};
use tokio::time::Instant;

/// `tern rr` options.
#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    disable_version_flag = true,
    about = "MQTT 5 request/response (like mosquitto_rr)",
    after_help = concat!(
        "Send a request and print the response. tern rr subscribes to the response topic \
(-e), publishes the message to the request topic (-t) with the MQTT 5 Response Topic and \
Correlation Data properties, and prints the first message on the response topic whose \
correlation data matches (a response without correlation data is accepted too). With -V 311 \
there are no properties: the first message on the response topic is the response.",
        "\n\n",
        "Examples:\n",
        "  tern rr -t services/time/get -e replies/me -m now -W 5\n",
        "  tern rr -t rpc/add -e rpc/add/reply -m '[1,2]' --json\n",
        "\n",
        exit_codes_help!(),
    )
)]
pub struct RrArgs {
    /// Request topic: where the request is published.
    #[arg(short = 't', long, value_name = "TOPIC", help_heading = "Request")]
    pub topic: Option<String>,

    /// Response topic: subscribed to, and sent as the request's Response Topic.
    #[arg(
        short = 'e',
        long = "response-topic",
        value_name = "TOPIC",
        help_heading = "Request"
    )]
    pub response_topic: Option<String>,

    #[command(flatten)]
    pub payload: PayloadArgs,

    /// QoS of the request and of the response subscription: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos, value_name = "QOS", help_heading = "Request")]
    pub qos: QoS,

    /// Exit with code 5 when no response arrived after this many seconds.
    #[arg(
        short = 'W',
        long,
        value_name = "SECONDS",
        help_heading = "When to exit"
    )]
    pub timeout: Option<u64>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `tern rr`.
pub async fn request_response(args: RrArgs) -> anyhow::Result<u8> {
    let quiet = args.conn.quiet;
    run_tool("rr", quiet, run(args)).await
}

/// Correlation data unique enough for one request: process id and a clock reading.
fn correlation() -> Bytes {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Bytes::from(format!("tern-rr-{}-{nanos:x}", std::process::id()))
}

async fn run(args: RrArgs) -> Result<u8, Failure> {
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let version = args.conn.version(ProtocolVersion::V5);
    let props = parse_properties(&args.conn.property, version)?;
    let topic = args
        .topic
        .clone()
        .ok_or_else(|| Failure::usage("a request topic is needed (-t TOPIC)"))?;
    let response_topic = args
        .response_topic
        .clone()
        .ok_or_else(|| Failure::usage("a response topic is needed (-e TOPIC)"))?;
    check_topic_name(&topic, "-t")?;
    check_topic_name(&response_topic, "-e")?;
    if !args.payload.given() {
        return Err(Failure::usage(
            "a request message is needed: -m MESSAGE, -f FILE, -s (stdin) or -n (empty)",
        ));
    }
    let opts = args.conn.connect_options("rr", version, &props)?;
    let payload = args.payload.load().await?.unwrap_or_default();
    let timed_out = || {
        Failure::new(
            exit::TIMEOUT,
            format!("no response within {} s", args.timeout.unwrap_or_default()),
        )
    };
    let sleep = || async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let (mut client, _ack) = tokio::select! {
        r = Client::connect(&opts) => r?,
        _ = sleep() => return Err(timed_out()),
    };

    let mut request_props = props.publish.clone();
    let corr = if version.is_v5() {
        request_props.response_topic = Some(ByteStr::from(response_topic.as_str()));
        let c = request_props
            .correlation_data
            .get_or_insert_with(correlation)
            .clone();
        Some(c)
    } else {
        None
    };

    let result: Result<Option<Message>, Failure> = async {
        tokio::select! {
            r = client.subscribe_one(&response_topic, args.qos) => { r?; }
            _ = sleep() => return Ok(None),
        }
        let request = Message::new(&topic, payload)
            .qos(args.qos)
            .properties(request_props);
        tokio::select! {
            r = client.publish(request) => { r?; }
            _ = sleep() => return Ok(None),
        }
        loop {
            let m = tokio::select! {
                r = client.recv() => r?,
                _ = sleep() => return Ok(None),
            };
            let matches = match (&corr, &m.properties.correlation_data) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            };
            if matches && m.topic.as_str() == response_topic {
                return Ok(Some(m));
            }
        }
    }
    .await;
    let disconnect = Disconnect {
        reason: 0,
        properties: props.disconnect.clone(),
    };
    match result {
        Ok(Some(m)) => {
            args.output.print(&m)?;
            let _ = client.disconnect_with(disconnect).await;
            Ok(exit::OK)
        }
        Ok(None) => {
            let _ = client.disconnect_with(disconnect).await;
            Err(timed_out())
        }
        Err(e) => {
            let _ = client.disconnect().await;
            Err(e)
        }
    }
}
