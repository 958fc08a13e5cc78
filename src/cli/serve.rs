//! `skein serve`, `skein keygen` and `skein pubkey`.

use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use skein::ad::encode_public_key;
use skein::clock::Offset;
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle, Options};
use skein::keys;
use skein::telemetry::{self, LogControl};

use super::KeyKind;

/// Runs a director until SIGINT/SIGTERM, then stops it gracefully; SIGHUP reloads.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let config = DirectorConfig::load(Some(config_path))?;
    let log = telemetry::init_with(&config.log.level, config.log.format);
    // Caught before anything slow, so that an early SIGHUP never kills the process.
    let mut hangups = super::Hangups::new();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let cancel = CancellationToken::new();
    let options = Options {
        clock: fault_clock()?,
        ..Options::default()
    };
    let director = Director::start_with(config, options, listener, cancel.clone()).await?;
    if skein::store::stuck_readers() > 0 {
        return start_again(director).await;
    }
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Signals that arrive during a reload are merged into one more reload.
            _ = hangups.recv() => reload(&director, config_path, &log).await,
        }
    }
    tracing::info!("shutting down: withdrawing, draining, flushing");
    director.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// A thread still reads the damaged store this start moved aside (sled looping over a
/// damaged page), and would keep a core busy for as long as this process lives: the
/// director stops as on SIGTERM (its fresh store flushed) and this process becomes a new
/// `skein serve` with the same arguments and the same pid, so a supervisor sees no exit.
/// The new start opens the fresh store, not the damaged one.
async fn start_again(director: DirectorHandle) -> anyhow::Result<()> {
    tracing::error!(
        stuck_threads = skein::store::stuck_readers(),
        "a thread reading the damaged store is stuck in sled and keeps a core busy; starting this director again in a new process"
    );
    director.shutdown().await;
    let exe = std::env::current_exe().context("cannot find this program to start it again")?;
    let error = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(anyhow::Error::new(error).context(format!("cannot start {} again", exe.display())))
}

/// The fault tests' seam for a wrong clock: `FAULT_CLOCK_OFFSET_MS` (signed
/// milliseconds) shifts this director's clock. Not a `SKEIN_` variable, which would be
/// read as a config key; unset or `0` in any real deployment.
fn fault_clock() -> anyhow::Result<Option<skein::clock::SharedClock>> {
    let Ok(text) = std::env::var("FAULT_CLOCK_OFFSET_MS") else {
        return Ok(None);
    };
    let offset_ms: i64 = text.trim().parse().with_context(|| {
        format!("FAULT_CLOCK_OFFSET_MS={text:?} is not a whole number of milliseconds")
    })?;
    if offset_ms == 0 {
        return Ok(None);
    }
    tracing::warn!(
        offset_ms,
        "FAULT_CLOCK_OFFSET_MS shifts this director's clock (fault tests only)"
    );
    Ok(Some(std::sync::Arc::new(Offset { offset_ms })))
}

/// SIGHUP: re-reads the config file (settings that change live) and the trust file.
async fn reload(director: &DirectorHandle, config_path: &Path, log: &LogControl) {
    tracing::info!(config = %config_path.display(), "SIGHUP: reloading");
    match DirectorConfig::load(Some(config_path)) {
        Ok(config) => {
            if let Err(error) = log.set_level(&config.log.level) {
                tracing::error!(%error, "log.level refused; the filter in force stays");
            }
            // Refusals and revocations are logged where they happen.
            let _ = director.reload_config(config).await;
        }
        Err(error) => {
            tracing::error!(%error, "config file refused; settings unchanged, reloading the trust file only");
            let _ = director.reload().await;
        }
    }
}

/// Writes a key and prints its public half: base64url for Ed25519, a JWKS for EC.
pub fn keygen(out: &Path, kind: KeyKind) -> anyhow::Result<()> {
    match kind {
        KeyKind::Ed25519 => {
            let key = keys::generate(out)?;
            println!("{}", encode_public_key(&key.verifying_key()));
        }
        KeyKind::Ec => {
            let key = skein::eckey::generate(out)?;
            println!("{}", serde_json::to_string_pretty(&key.public_jwks())?);
        }
    }
    Ok(())
}

/// Prints the public half of an existing key.
pub fn pubkey(key: &Path) -> anyhow::Result<()> {
    let key = keys::load(key)?;
    println!("{}", encode_public_key(&key.verifying_key()));
    Ok(())
}
