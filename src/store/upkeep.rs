//! The store's background upkeep: while commits fail (a full disk), retry one every
//! interval, so ingest and `/ready` recover when space returns even if no ad arrives;
//! otherwise confirm the last commit in the manifest (see `manifest`).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Store;

/// Runs until `cancel`, once every `interval`.
pub async fn run(store: Store, interval: Duration, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {
                // Failures and recoveries are logged by the commit itself.
                if store.write_failing().is_some() {
                    let _ = store.flush_pending().await;
                } else if let Err(error) = store.confirm().await {
                    tracing::warn!(%error, "could not confirm the last commit in the manifest");
                }
            }
        }
    }
}
