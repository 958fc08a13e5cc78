//! `skein serve`, `skein keygen` and `skein pubkey`.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use skein::ad::encode_public_key;
use skein::config::DirectorConfig;
use skein::director::Director;
use skein::keys;

/// Runs a director until a signal, then stops it gracefully.
pub async fn serve(config_path: &Path) -> anyhow::Result<()> {
    let config = DirectorConfig::load(Some(config_path))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let cancel = CancellationToken::new();
    let director = Director::start(config, listener, cancel.clone()).await?;
    super::shutdown_signal().await;
    tracing::info!("shutting down: withdrawing, draining, flushing");
    director.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Writes a key and prints its public half.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = keys::generate(out)?;
    println!("{}", encode_public_key(&key.verifying_key()));
    Ok(())
}

/// Prints the public half of an existing key.
pub fn pubkey(key: &Path) -> anyhow::Result<()> {
    let key = keys::load(key)?;
    println!("{}", encode_public_key(&key.verifying_key()));
    Ok(())
}
