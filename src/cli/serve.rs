//! `skein serve` and `skein keygen`.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use skein::ad::encode_public_key;
use skein::config::DirectorConfig;
use skein::director::{Director, DirectorHandle};
use skein::keys;
use skein::telemetry::{self, LogControl};

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
    let director = Director::start(config, listener, cancel.clone()).await?;
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

/// Writes a key and prints its public half.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = keys::generate(out)?;
    println!("{}", encode_public_key(&key.verifying_key()));
    Ok(())
}
