//! The `skein` command line: argument parsing and one function per subcommand.

mod check;
mod download;
mod inspect;
mod memory;
mod objects;
mod serve;
mod service;
mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use token::TokenArg;

/// Skein: a highly-available director cluster for Pelican-style data federations.
#[derive(Debug, Parser)]
#[command(name = "skein", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--ca-bundle`, for the commands that talk to directors.
#[derive(Debug, Args)]
pub struct CaBundle {
    /// Extra CA certificates (PEM) to trust for HTTPS directors.
    #[arg(
        id = "ca_bundle",
        long = "ca-bundle",
        env = "SKEIN_CA_BUNDLE",
        value_name = "FILE"
    )]
    pub path: Option<PathBuf>,
}

/// `--no-memory`, for the commands that find directors.
#[derive(Debug, Args)]
pub struct NoMemory {
    /// Neither read nor update the directors remembered in
    /// `$XDG_CACHE_HOME/skein/directors.json`.
    #[arg(long = "no-memory")]
    pub off: bool,
}

/// The kinds of key `skein keygen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// Ed25519: signs Skein ads.
    Ed25519,
    /// EC P-256 (PKCS#8 PEM): signs Pelican advertise tokens and access tokens.
    Ec,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a director until SIGINT/SIGTERM (graceful: withdraws, drains, flushes).
    Serve {
        /// Director config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a director or service config and the files it names; start nothing.
    Check {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Check it as this kind (default: a file with `kind = ...` is a service config).
        #[arg(long = "as", value_enum, value_name = "KIND")]
        kind: Option<skein::preflight::ConfigKind>,
    },
    /// Write a new private key (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// `ed25519` (Skein ads; prints the base64url public key) or `ec` (P-256 PEM for
        /// `protocol = "pelican"` and token issuers; prints the public JWKS).
        #[arg(long, value_enum, default_value_t = KeyKind::Ed25519)]
        kind: KeyKind,
    },
    /// Print the public key (base64url) of a private key file, for the trust file.
    Pubkey {
        /// The private key (as written by `skein keygen`; mode 0600).
        #[arg(long)]
        key: PathBuf,
    },
    /// Sign this server's ad and send it to every director, every interval.
    Advertise {
        /// Service config (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Send once and exit (0 if at least one director holds the ad).
        #[arg(long)]
        once: bool,
        /// Print the signed ad (the exact JSON body) and send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the directors a director or discovery URL knows.
    Directors {
        /// A director or federation discovery URL.
        #[arg(long)]
        from: String,
        /// Print details as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ca: CaBundle,
    },
    /// Print the live ads a director holds.
    Ads {
        /// A director URL.
        #[arg(long)]
        from: String,
        /// Print the ads as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ca: CaBundle,
    },
    /// Ask the federation where PATH goes (failing over across directors).
    Locate {
        /// Federation discovery or director URL (repeat to give several).
        #[arg(long, required = true)]
        federation: Vec<String>,
        /// Ask for an origin rather than a cache.
        #[arg(long)]
        origin: bool,
        /// Ask where a write (PUT) goes.
        #[arg(long)]
        put: bool,
        /// Print the director's explanation (client location, sort, each candidate) as JSON.
        #[arg(long)]
        explain: bool,
        /// Object path, e.g. /test/hello.txt.
        path: String,
        #[command(flatten)]
        ca: CaBundle,
        #[command(flatten)]
        memory: NoMemory,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Download an object through the federation (director, then caches, with failover).
    Get {
        /// Federation discovery or director URL (repeat to give several).
        #[arg(long, required = true)]
        federation: Vec<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Object path, e.g. /test/hello.txt.
        path: String,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Print a JSON summary when done (stdout with -o, else stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ca: CaBundle,
        #[command(flatten)]
        memory: NoMemory,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Exit 0 if the director at URL is ready (for compose healthchecks).
    Healthcheck {
        /// Director URL, e.g. http://127.0.0.1:8444.
        url: String,
        #[command(flatten)]
        ca: CaBundle,
    },
    /// Run a small origin serving a directory under its namespaces, advertising itself.
    Origin {
        /// Service config (TOML) with `listen` and `export`.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a small cache that fetches misses from origins found through the director.
    Cache {
        /// Service config (TOML) with `listen` and `cache_dir`.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve::serve(&config).await,
        Command::Check { config, kind } => check::check(&config, kind),
        Command::Keygen { out, kind } => serve::keygen(&out, kind),
        Command::Pubkey { key } => serve::pubkey(&key),
        Command::Advertise {
            config,
            once,
            dry_run,
        } => service::advertise(&config, once, dry_run).await,
        Command::Directors { from, json, ca } => inspect::directors(&from, json, &ca).await,
        Command::Ads { from, json, ca } => inspect::ads(&from, json, &ca).await,
        Command::Healthcheck { url, ca } => inspect::healthcheck(&url, &ca).await,
        Command::Locate {
            federation,
            origin,
            put,
            explain,
            path,
            ca,
            memory,
            token,
        } => {
            objects::locate(
                &federation,
                objects::Question {
                    origin,
                    put,
                    explain,
                },
                &path,
                &ca,
                !memory.off,
                &token,
            )
            .await
        }
        Command::Get {
            federation,
            output,
            path,
            quiet,
            json,
            ca,
            memory,
            token,
        } => {
            let style = objects::GetStyle {
                quiet,
                json,
                memory: !memory.off,
            };
            objects::get(&federation, output.as_deref(), &path, &ca, style, &token).await
        }
        Command::Origin { config } => service::origin(&config).await,
        Command::Cache { config } => service::cache(&config).await,
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
