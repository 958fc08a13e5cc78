//! The `skein` binary: parse the command line, start logging, run the subcommand.

mod cli;

use clap::Parser;

/// mimalloc: the redirect path allocates per request, and glibc's malloc was a sixth of
/// its CPU time (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // Servers log what they do; client commands speak only when something is wrong.
    // `serve` sets logging up itself, from its config file (`[log]`).
    let level = match cli.command {
        cli::Command::Serve { .. } => None,
        cli::Command::Advertise { .. }
        | cli::Command::Origin { .. }
        | cli::Command::Cache { .. } => Some("info"),
        _ => Some("warn"),
    };
    if let Some(level) = level {
        skein::telemetry::init(level);
    }
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("skein: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
