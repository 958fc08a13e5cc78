//! The expiry worker: sleeps until the earliest expiry (or `prune_interval`), then
//! drops expired ads from memory and the store.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// Runs until `cancel` fires.
pub async fn run(
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    prune_interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        let now = ledger.clock().now_ms();
        let wait = match ledger.view().next_expiry() {
            Some(at) => Duration::from_millis(at.saturating_sub(now)),
            None => prune_interval,
        }
        .min(prune_interval);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ledger.expiry_changed().notified() => continue,
            _ = tokio::time::sleep(wait) => {}
        }
        let now = ledger.clock().now_ms();
        match ledger.prune(now).await {
            Ok(expired) if !expired.is_empty() => {
                metrics.pruned(expired.len() as u64);
                tracing::info!(count = expired.len(), "pruned expired ads");
                tracing::debug!(keys = ?expired, "pruned");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(%error, "pruning failed; will retry");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(prune_interval) => {}
                }
            }
        }
    }
}
