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
        ledger.set_next_wake(now.saturating_add(wait.as_millis() as u64));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::ServerKind;
    use crate::clock::ManualClock;
    use crate::fixtures;
    use crate::ledger::AdLimits;
    use crate::store::Store;

    #[tokio::test(start_paused = true)]
    async fn prunes_when_the_clock_passes_the_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let limits = AdLimits {
            max_lifetime: Duration::from_secs(900),
            max_clock_skew: Duration::from_secs(60),
        };
        let trust = fixtures::trust(&[("origin-1", ServerKind::Origin, &["/ns"])]);
        let store = Store::open(dir.path()).unwrap();
        let ledger = Arc::new(Ledger::open(store, trust, clock.clone(), limits).unwrap().0);
        let mut ad = fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], 999_000, 1);
        ad.expires_at = 1_060_000;
        ledger
            .ingest(ad.sign(&fixtures::key_for("origin-1")))
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(run(
            ledger.clone(),
            metrics.clone(),
            Duration::from_secs(30),
            cancel.clone(),
        ));

        // Time passes for the worker but the wall clock says the ad is still live.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(ledger.view().len(), 1);

        clock.set(1_060_000);
        for _ in 0..100 {
            if ledger.view().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(ledger.view().is_empty(), "pruned");
        assert!(metrics.render(0, 0).contains("skein_ads_pruned_total 1"));
        cancel.cancel();
        worker.await.unwrap();
        drop(ledger);
        let reopened = Store::open(dir.path()).unwrap();
        assert!(
            reopened.load_ads().unwrap().ads.is_empty(),
            "pruned from the store too"
        );
    }
}
