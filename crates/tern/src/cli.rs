//! The command line.

use crate::config::Config;
use crate::server::Server;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// tern: an MQTT 3.1, 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// Check a config file and print the effective settings.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Publish messages (like mosquitto_pub).
    Pub(crate::tools::PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    Sub(crate::tools::SubArgs),
    /// MQTT 5 request/response (like mosquitto_rr).
    Rr(crate::tools::RrArgs),
    /// Load generator for any MQTT broker on loopback.
    Bench(crate::bench::BenchArgs),
    /// A relay with no broker logic (QoS 0 only), to run `tern bench` against: the latency the
    /// machine itself gives. For benchmarks only.
    #[command(hide = true)]
    BenchFloor(crate::bench::FloorArgs),
    /// Manage a password file (like mosquitto_passwd).
    Passwd(crate::tools::PasswdArgs),
}

/// `tern serve` options; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see tern.example.toml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen for MQTT over TCP on HOST:PORT; repeatable. Replaces the config's `listen`.
    #[arg(short, long, value_name = "HOST:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Directory for durable state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// When an acknowledged message is on disk: fsync (default), interval:<N>ms, or none.
    #[arg(long, value_name = "MODE")]
    pub durability: Option<String>,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive). RUST_LOG is used
    /// when neither this nor the config sets one.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format: text or json.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Admin HTTP listener (metrics, health, JSON API, dashboard) on HOST:PORT
    /// (default 127.0.0.1:9883); `off` turns it off.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,
    /// Bearer token for the admin API and /metrics (also: TERN_ADMIN_TOKEN); required when the
    /// admin listener is not on loopback.
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Seconds between $SYS publications (0: off).
    #[arg(long, value_name = "SECS")]
    pub sys_interval: Option<u64>,
    /// Worker threads (0: one per CPU the process may use).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Listen for MQTT over TLS on HOST:PORT (needs --cert and --key); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub tls_listen: Vec<SocketAddr>,
    /// Listen for MQTT over WebSocket on HOST:PORT (any path); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub ws_listen: Vec<SocketAddr>,
    /// Listen for MQTT over secure WebSocket on HOST:PORT (needs --cert and --key); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub wss_listen: Vec<SocketAddr>,
    /// Server certificate chain (PEM) for TLS and WSS listeners.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM) for TLS and WSS listeners.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) to verify client certificates against.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// Require a client certificate signed by --cafile on the TLS/WSS listeners of the flags.
    #[arg(long)]
    pub require_certificate: bool,
    /// Password file (see `tern passwd`); applies to every listener.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// ACL file in Mosquitto's format; applies to every listener.
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// Allow clients without a user name (default: only while no password file is set).
    #[arg(long, value_name = "true|false")]
    pub allow_anonymous: Option<bool>,
}

impl ServeArgs {
    /// The config file (or the defaults) with the command-line overrides applied.
    pub fn effective_config(&self) -> anyhow::Result<(Config, bool)> {
        let (mut config, from_file) = match &self.config {
            Some(path) => (Config::from_file(path)?, true),
            None => (Config::default(), false),
        };
        if !self.listen.is_empty() {
            config.listen.clone_from(&self.listen);
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(level) = &self.log_level {
            config.log_level.clone_from(level);
        }
        if let Some(d) = &self.durability {
            config.durability.clone_from(d);
        }
        if let Some(f) = &self.log_format {
            config.log_format = match f.as_str() {
                "json" => crate::config::LogFormat::Json,
                _ => crate::config::LogFormat::Text,
            };
        }
        match self.admin_listen.as_deref() {
            None => {}
            Some("off" | "none" | "") => config.admin.enabled = false,
            Some(addr) => {
                config.admin.enabled = true;
                config.admin.listen = addr
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--admin-listen {addr}: {e} (want HOST:PORT)"))?;
            }
        }
        if let Some(t) = &self.admin_token {
            config.admin.token.clone_from(t);
        }
        if let Some(s) = self.sys_interval {
            config.sys_interval_secs = s;
        }
        if let Some(w) = self.workers {
            config.workers = w;
        }
        if let Some(c) = &self.cert {
            config.tls.cert = Some(c.clone());
        }
        if let Some(k) = &self.key {
            config.tls.key = Some(k.clone());
        }
        if let Some(ca) = &self.cafile {
            config.tls.cafile = Some(ca.clone());
        }
        let flag_listeners = [
            (&self.tls_listen, "tls"),
            (&self.ws_listen, "ws"),
            (&self.wss_listen, "wss"),
        ];
        for (binds, transport) in flag_listeners {
            for bind in binds {
                config.listener.push(crate::config::ListenerConfig {
                    bind: *bind,
                    transport: transport.to_string(),
                    cert: None,
                    key: None,
                    cafile: None,
                    require_certificate: self.require_certificate && transport != "ws",
                    use_identity_as_username: false,
                    proxy_protocol: false,
                    ws_path: None,
                    allow_anonymous: None,
                    max_connections: None,
                });
            }
        }
        if let Some(p) = &self.password_file {
            config.password_file = Some(p.clone());
        }
        if let Some(p) = &self.acl_file {
            config.acl_file = Some(p.clone());
        }
        if let Some(a) = self.allow_anonymous {
            config.allow_anonymous = Some(a);
        }
        config.validate()?;
        Ok((config, from_file || self.log_level.is_some()))
    }
}

/// Sets up logging: `--log-level` or the config's `log_level`, else `RUST_LOG`.
pub fn init_logging(level: &str, explicit: bool) {
    init_logging_with(level, explicit, crate::config::LogFormat::Text);
}

/// [`init_logging`] with a line format: text, or one JSON object per line (`timestamp`,
/// `level`, `target`, `fields` with `message` and the event's fields).
pub fn init_logging_with(level: &str, explicit: bool, format: crate::config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !explicit && !env.is_empty() => EnvFilter::new(env),
        _ => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Json => builder.json().try_init(),
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// `tern serve`: reads the configuration, prepares the process while it has one thread (open-file
/// limit, descriptor table), then starts the runtime and runs the broker until a signal.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, explicit_level) = args.effective_config()?;
    init_logging_with(&config.log_level, explicit_level, config.log_format);
    raise_nofile_limit(config.limits.max_connections);
    // Every connection is a descriptor, plus the broker's own.
    let fds = config
        .limits
        .max_connections
        .saturating_add(crate::fd_table::SPARE);
    match crate::fd_table::presize(fds) {
        Ok(n) => tracing::debug!(descriptors = n, "descriptor table grown at start"),
        Err(e) => tracing::warn!(error = %e, "cannot grow the descriptor table at start"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.workers > 0 {
        runtime.worker_threads(config.workers);
    }
    runtime.enable_all().build()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let server = Server::start(&config).await?;
    for addr in server.local_addrs() {
        if addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "tern listens on {addr} (loopback only: clients on other machines cannot connect; use --listen 0.0.0.0:1883 to accept them)"
            );
        } else {
            tracing::warn!(%addr, "tern listens on {addr} beyond loopback with NO authentication: anyone who can reach it can connect");
        }
    }
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), workers, "tern started");
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard limit, logs the value in force,
/// and warns when it is too low for `limits.max_connections` (each connection is a descriptor;
/// [`crate::fd_table::SPARE`] are kept for the store, listeners and the rest).
fn raise_nofile_limit(max_connections: usize) {
    let want = max_connections.saturating_add(crate::fd_table::SPARE) as u64;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            tracing::info!(
                limit = n,
                "open-file limit (RLIMIT_NOFILE) raised to the hard limit"
            );
            n
        }
        Err(e) => match rlimit::Resource::NOFILE.get() {
            Ok((soft, _)) => {
                tracing::warn!(error = %e, limit = soft, "cannot raise the open-file limit (RLIMIT_NOFILE)");
                soft
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
                return;
            }
        },
    };
    if limit < want {
        tracing::warn!(
            limit,
            max_connections,
            "open-file limit {limit} is below limits.max_connections + {} = {want}: connections beyond about {} will fail to be accepted (raise `ulimit -n` or LimitNOFILE=)",
            crate::fd_table::SPARE,
            limit.saturating_sub(crate::fd_table::SPARE as u64)
        );
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `tern check-config FILE`.
pub fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let mut config = Config::from_file(file)?;
    println!("# {file}: OK", file = file.display());
    println!("# Effective settings (defaults filled in):");
    if !config.admin.token.is_empty() {
        config.admin.token = "(hidden)".to_string();
    }
    print!("{}", config.to_toml());
    Ok(())
}
