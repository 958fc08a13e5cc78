//! `skein origin`: serves a directory under its namespaces and advertises itself.

use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;

/// Runs until `cancel`.
pub async fn run(_config: ServiceConfig, _cancel: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("skein origin is not built yet")
}
