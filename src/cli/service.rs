//! `skein advertise`, `skein origin` and `skein cache`.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use skein::ad::AdStatus;
use skein::advertiser::Advertiser;
use skein::config::ServiceConfig;

/// Advertises a service: once, as a dry run, or until a signal.
pub async fn advertise(config_path: &Path, once: bool, dry_run: bool) -> anyhow::Result<()> {
    let config = ServiceConfig::load(Some(config_path))?;
    let advertiser = Advertiser::new(config)?;
    if dry_run {
        println!("{}", advertiser.body(AdStatus::Ok));
        return Ok(());
    }
    if once {
        let deliveries = advertiser.advertise_once(AdStatus::Ok).await;
        for d in &deliveries {
            match &d.result {
                Ok(status) => println!("{}: {status}", d.director),
                Err(error) => println!("{}: failed: {error}", d.director),
            }
        }
        if deliveries.iter().any(|d| d.held()) {
            return Ok(());
        }
        anyhow::bail!("no director accepted the ad ({} tried)", deliveries.len());
    }
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        stop.cancel();
    });
    advertiser.run(cancel).await;
    Ok(())
}

/// Runs the small origin server.
pub async fn origin(config_path: &Path) -> anyhow::Result<()> {
    let config = ServiceConfig::load(Some(config_path))?;
    skein::servers::origin::run(config, shutdown()).await
}

/// Runs the small cache server.
pub async fn cache(config_path: &Path) -> anyhow::Result<()> {
    let config = ServiceConfig::load(Some(config_path))?;
    skein::servers::cache::run(config, shutdown()).await
}

fn shutdown() -> CancellationToken {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        stop.cancel();
    });
    cancel
}
