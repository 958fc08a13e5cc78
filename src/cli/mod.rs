//! The `skein` command line: argument parsing and one function per subcommand.

mod check;
mod download;
mod inspect;
mod memory;
mod objects;
mod records;
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

/// The operator's key and the directors to send a record to.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin private key (listed with `kind = "admin"` in the trust file).
    #[arg(long)]
    pub key: PathBuf,
    /// The key's name in the trust file (default: the key file's name without extension).
    #[arg(long)]
    pub signer: Option<String>,
    /// A director URL (repeat to give several: the first that answers takes it).
    #[arg(long, required = true)]
    pub federation: Vec<String>,
    #[command(flatten)]
    pub ca: CaBundle,
}

/// `skein downtime ...`.
#[derive(Debug, Subcommand)]
pub enum DowntimeAction {
    /// Put a server in downtime from START to END: no director redirects to it then.
    Add {
        #[command(flatten)]
        admin: AdminArgs,
        /// The server's name.
        server: String,
        /// `now`, a time like 2026-11-27T18:00:00Z, or a delay like 30m.
        #[arg(long, default_value = "now")]
        start: String,
        /// A time like 2026-11-27T20:00:00Z, or a delay from now like 2h.
        #[arg(long)]
        end: String,
        /// Why (shown by `downtime list` and in `/ads`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a server's downtime now.
    Remove {
        #[command(flatten)]
        admin: AdminArgs,
        /// The server's name.
        server: String,
    },
    /// List the downtime and ban records a director holds.
    List {
        /// A director URL (repeat to give several).
        #[arg(long, required = true)]
        federation: Vec<String>,
        #[command(flatten)]
        ca: CaBundle,
    },
}

/// `skein ban` / `skein unban`.
#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The server's name.
    server: String,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
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
    /// Server downtime records (signed with an admin key, honoured by every director).
    Downtime {
        #[command(subcommand)]
        action: DowntimeAction,
    },
    /// Ban a server: no director redirects to it until it is unbanned.
    Ban(BanArgs),
    /// Lift a ban.
    Unban(BanArgs),
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
        Command::Downtime { action } => downtime(action).await,
        Command::Ban(args) => ban(args, true).await,
        Command::Unban(args) => ban(args, false).await,
        Command::Origin { config } => service::origin(&config).await,
        Command::Cache { config } => service::cache(&config).await,
    }
}

fn signer(admin: &AdminArgs) -> records::Signer<'_> {
    records::Signer {
        key: &admin.key,
        name: admin.signer.as_deref(),
    }
}

async fn downtime(action: DowntimeAction) -> anyhow::Result<()> {
    use skein::clock::Clock;
    let (admin, change) = match &action {
        DowntimeAction::List { federation, ca } => return records::list(federation, ca).await,
        DowntimeAction::Add {
            admin,
            server,
            start,
            end,
            reason,
        } => {
            let now = skein::clock::SystemClock.now_ms();
            let window = (
                records::parse_time(start, now)?,
                records::parse_time(end, now)?,
            );
            let change = records::Change {
                kind: skein::ad::ServerKind::Downtime,
                server,
                active: true,
                window: Some(window),
                reason,
            };
            (admin, change)
        }
        DowntimeAction::Remove { admin, server } => {
            let change = records::Change {
                kind: skein::ad::ServerKind::Downtime,
                server,
                active: false,
                window: None,
                reason: "",
            };
            (admin, change)
        }
    };
    records::send(&signer(admin), &admin.federation, change, &admin.ca).await
}

async fn ban(args: BanArgs, active: bool) -> anyhow::Result<()> {
    let change = records::Change {
        kind: skein::ad::ServerKind::Ban,
        server: &args.server,
        active,
        window: None,
        reason: &args.reason,
    };
    records::send(
        &signer(&args.admin),
        &args.admin.federation,
        change,
        &args.admin.ca,
    )
    .await
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

/// SIGHUP deliveries (never resolves where there is no SIGHUP).
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts catching SIGHUP (its default action would kill the process).
    pub fn new() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// The next SIGHUP; several delivered since the last call count as one.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}
