//! `skein serve` and `skein keygen`.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use skein::ad::encode_public_key;
use skein::config::DirectorConfig;
use skein::director::Director;
use skein::keys;

use super::KeyKind;

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
