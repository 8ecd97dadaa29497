//! The `tern` binary.

use clap::Parser;
use std::process::ExitCode;
use tern::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => cli::check_config(&file).map(|()| 0),
        Command::Passwd(args) => tern::tools::passwd(&args),
        Command::Serve(args) => cli::serve(args).map(|()| 0),
        Command::BenchFloor(args) => tern::bench::run_floor(&args),
        Command::Bench(args) => {
            // While the process has one thread (see tern::fd_table); the bench works without.
            let _ = tern::fd_table::presize(
                args.max_connections().saturating_add(tern::fd_table::SPARE),
            );
            run_async(Command::Bench(args))
        }
        command => run_async(command),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The subcommands that run on a tokio runtime built here.
fn run_async(command: Command) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match command {
            Command::Pub(args) => tern::tools::publish(args).await,
            Command::Sub(args) => tern::tools::subscribe(args).await,
            Command::Rr(args) => tern::tools::request_response(args).await,
            Command::Bench(args) => tern::bench::run(args).await,
            Command::CheckConfig { .. }
            | Command::Passwd(_)
            | Command::Serve(_)
            | Command::BenchFloor(_) => {
                unreachable!("handled in main")
            }
        }
    })
}
