//! `tern sub`: subscribe and print the messages received.

use super::common::exit_codes_help;
use super::common::{
    ConnArgs, Failure, OutputArgs, check_topic_filter, exit, parse_properties, parse_qos, run_tool,
};
use bytes::Bytes;
use clap::Args;
use std::time::Duration;
use tern_client::{Client, ClientError, Message, PublishToken};
use tern_codec::{Disconnect, ProtocolVersion, QoS, SubscriptionOptions};
use tokio::time::Instant;

/// `tern sub` options.
#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    disable_version_flag = true,
    about = "Subscribe and print messages (like mosquitto_sub)",
    after_help = concat!(
        "Subscribe to one or more topic filters on an MQTT broker (any broker: tern, \
Mosquitto, ...) and print each message received, until interrupted, or until -C messages, the \
-W time limit, or (--retained-only) the first live message.",
        "\n\n",
        "Examples:\n",
        "  tern sub -t 'sensors/#' -v\n",
        "  tern sub -t 'status/#' --retained-only -W 2       # dump retained messages\n",
        "  tern sub -t 'status/#' --remove-retained -W 2     # and clear them\n",
        "  tern sub -t jobs -C 1 -W 30 --json                # wait for one message\n",
        "  tern sub -V 5 -t t --json | jq .properties\n",
        "\n",
        exit_codes_help!(),
    )
)]
pub struct SubArgs {
    /// Topic filter to subscribe to (+ and # wildcards); repeatable.
    #[arg(
        short = 't',
        long,
        value_name = "FILTER",
        help_heading = "Subscription"
    )]
    pub topic: Vec<String>,

    /// QoS of the subscriptions: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos, value_name = "QOS", help_heading = "Subscription")]
    pub qos: QoS,

    /// Unsubscribe from this filter first (for persistent sessions); repeatable.
    #[arg(
        short = 'U',
        long,
        value_name = "FILTER",
        help_heading = "Subscription"
    )]
    pub unsubscribe: Vec<String>,

    /// Do not print messages on topics matching this filter; repeatable.
    #[arg(
        short = 'T',
        long = "filter-out",
        value_name = "FILTER",
        help_heading = "Subscription"
    )]
    pub filter_out: Vec<String>,

    /// Exit after printing this many messages.
    #[arg(short = 'C', long, value_name = "COUNT", help_heading = "When to exit")]
    pub count: Option<u64>,

    /// Exit with code 5 after this many seconds (counted from the start).
    #[arg(
        short = 'W',
        long,
        value_name = "SECONDS",
        help_heading = "When to exit"
    )]
    pub timeout: Option<u64>,

    /// Exit once the subscriptions are acknowledged (to set up a persistent session).
    #[arg(
        short = 'E',
        long = "exit-after-subscribe",
        help_heading = "When to exit"
    )]
    pub exit_after_subscribe: bool,

    /// Handle retained messages only, and exit at the first message that is not retained.
    #[arg(long, help_heading = "When to exit")]
    pub retained_only: bool,

    /// Do not print stale (retained) messages.
    #[arg(
        short = 'R',
        long = "no-retained",
        help_heading = "Subscription",
        conflicts_with = "retained_only"
    )]
    pub no_retained: bool,

    /// Clear each retained message received, by publishing an empty retained message to its
    /// topic (messages filtered out by -T are kept).
    #[arg(long, help_heading = "Subscription")]
    pub remove_retained: bool,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `tern sub`.
pub async fn subscribe(args: SubArgs) -> anyhow::Result<u8> {
    let quiet = args.conn.quiet;
    run_tool("sub", quiet, run(args)).await
}

async fn run(args: SubArgs) -> Result<u8, Failure> {
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let version = args.conn.version(ProtocolVersion::V3_1_1);
    let props = parse_properties(&args.conn.property, version)?;
    if args.topic.is_empty() {
        return Err(Failure::usage("a topic filter is needed (-t FILTER)"));
    }
    for t in &args.topic {
        check_topic_filter(t, "-t")?;
    }
    for t in args.filter_out.iter().chain(&args.unsubscribe) {
        check_topic_filter(t, "-T/-U")?;
    }
    if args.count == Some(0) {
        return Err(Failure::usage("-C needs a count of at least 1"));
    }
    let opts = args.conn.connect_options("sub", version, &props)?;
    let timed_out = || {
        Failure::new(
            exit::TIMEOUT,
            format!("timed out after {} s", args.timeout.unwrap_or(0)),
        )
    };
    let connect = Client::connect(&opts);
    let (mut client, _ack) = match deadline {
        Some(d) => tokio::time::timeout_at(d, connect)
            .await
            .map_err(|_| timed_out())??,
        None => connect.await?,
    };

    let result = session(&mut client, &args, &props, deadline).await;
    let disconnect = Disconnect {
        reason: 0,
        properties: props.disconnect.clone(),
    };
    match result {
        Ok(Ending::TimedOut) => {
            let _ = client.disconnect_with(disconnect).await;
            Err(timed_out())
        }
        Ok(Ending::Done) => {
            client.disconnect_with(disconnect).await?;
            Ok(exit::OK)
        }
        Err(e) => {
            let _ = client.disconnect().await;
            Err(e)
        }
    }
}

enum Ending {
    Done,
    TimedOut,
}

async fn session(
    client: &mut Client,
    args: &SubArgs,
    props: &super::common::PropertySet,
    deadline: Option<Instant>,
) -> Result<Ending, Failure> {
    let within = |d: Option<Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    if !args.unsubscribe.is_empty() {
        let filters: Vec<&str> = args.unsubscribe.iter().map(String::as_str).collect();
        tokio::select! {
            r = client.unsubscribe(&filters, props.unsubscribe.clone()) => { r?; }
            _ = within(deadline) => return Ok(Ending::TimedOut),
        }
    }
    let opts = SubscriptionOptions {
        qos: args.qos,
        ..Default::default()
    };
    let filters: Vec<(&str, SubscriptionOptions)> =
        args.topic.iter().map(|t| (t.as_str(), opts)).collect();
    let ack = tokio::select! {
        r = client.subscribe(&filters, props.subscribe.clone()) => r?,
        _ = within(deadline) => return Ok(Ending::TimedOut),
    };
    let mut refused = 0;
    for (i, (f, _)) in filters.iter().enumerate() {
        let code = ack.reasons.get(i).copied().unwrap_or(0x80);
        if code >= 0x80 {
            refused += 1;
            if !args.conn.quiet {
                eprintln!(
                    "tern sub: subscription to {f:?} refused: {} (0x{code:02X})",
                    if client.version().is_v5() {
                        tern_client::reason_text(code)
                    } else {
                        "failure"
                    }
                );
            }
        }
    }
    if refused == filters.len() {
        return Err(Failure::error("every subscription was refused"));
    }
    if args.exit_after_subscribe {
        return Ok(Ending::Done);
    }

    let mut printed: u64 = 0;
    let mut removals: Vec<PublishToken> = Vec::new();
    // Ctrl-C ends the run like -C does: DISCONNECT (no will), exit 0, as mosquitto_sub.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let ending = loop {
        let msg = tokio::select! {
            r = client.recv() => r?,
            _ = within(deadline) => break Ending::TimedOut,
            _ = &mut interrupted => break Ending::Done,
        };
        if args
            .filter_out
            .iter()
            .any(|f| tern_topic::matches(f, &msg.topic))
        {
            continue;
        }
        if args.remove_retained && msg.retain {
            let clear = Message::new(&msg.topic, Bytes::new())
                .qos(QoS::AtLeastOnce)
                .retain(true);
            removals.push(client.start_publish(clear).await?);
        }
        if args.retained_only && !msg.retain {
            break Ending::Done;
        }
        if args.no_retained && msg.retain {
            continue;
        }
        args.output.print(&msg)?;
        printed += 1;
        if args.count == Some(printed) {
            break Ending::Done;
        }
    };
    // The removals must be acknowledged before we leave (a timeout still waits for them,
    // briefly).
    for t in removals {
        match tokio::time::timeout(Duration::from_secs(5), t.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => return Err(Failure::from(ClientError::Timeout)),
        }
    }
    Ok(ending)
}
