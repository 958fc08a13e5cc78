//! `skein cache`: serves from its disk, fetching misses from origins through the director.

use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;

/// Runs until `cancel`.
pub async fn run(_config: ServiceConfig, _cancel: CancellationToken) -> anyhow::Result<()> {
    anyhow::bail!("skein cache is not built yet")
}
