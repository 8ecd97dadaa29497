//! The `tern` binary.

use clap::Parser;
use std::process::ExitCode;
use tern::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => cli::check_config(&file).map(|()| 0),
        Command::Passwd(args) => tern::tools::passwd(&args),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async move {
                    match command {
                        Command::Serve(args) => cli::serve(args).await.map(|()| 0),
                        Command::Pub(args) => tern::tools::publish(args).await,
                        Command::Sub(args) => tern::tools::subscribe(args).await,
                        Command::Rr(args) => tern::tools::request_response(args).await,
                        Command::Bench(args) => tern::bench::run(args).await,
                        Command::CheckConfig { .. } | Command::Passwd(_) => {
                            unreachable!("handled above")
                        }
                    }
                })
            }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}
