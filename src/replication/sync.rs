//! Catch-up and anti-entropy: compare digests with a peer, pull what it has newer,
//! queue for it what this director has newer.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ad::is_newer;
use crate::client::ClientError;

use super::Replicator;

/// Most keys fetched per request.
const FETCH_CHUNK: usize = 512;

/// Ads accepted more recently than this are not pushed by a sync: they are still in (or
/// just left) the peer's forward queue, and pushing them again would only duplicate.
const PUSH_GRACE_MS: u64 = 2_000;

/// What one sync exchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct SyncReport {
    /// Ads pulled from the peer and accepted as newer.
    pub pulled: usize,
    /// Ads queued for the peer because it lacked them.
    pub pushed: usize,
}

impl Replicator {
    /// One digest exchange with `peer`.
    pub async fn sync_with(self: &Arc<Self>, peer: &str) -> Result<SyncReport, ClientError> {
        let theirs = self.client.digest(peer).await?;
        if self.peers.mark_ok(peer) {
            tracing::info!(peer = %peer, "director reachable again");
        }
        let view = self.ledger.view();
        let now = self.ledger.clock().now_ms();
        let their_versions: HashMap<_, _> = theirs.iter().map(|e| (&e.key, e.version)).collect();
        let want: Vec<_> = theirs
            .iter()
            .filter(|e| is_newer(e.version, view.get(&e.key).map(|a| a.ad.version())))
            .map(|e| e.key.clone())
            .collect();
        let mut report = SyncReport::default();
        let queue = self.queue_for(&crate::peers::normalize(peer));
        let settled = now.saturating_sub(PUSH_GRACE_MS);
        for ad in view
            .ads()
            .filter(|a| a.expires_at > now && a.received_at <= settled)
        {
            let key = ad.ad.key();
            if is_newer(ad.ad.version(), their_versions.get(&key).copied()) {
                queue.push(ad.clone());
                report.pushed += 1;
            }
        }
        self.peers
            .note_sync(peer, want.is_empty() && report.pushed == 0);
        for chunk in want.chunks(FETCH_CHUNK) {
            let ads = self.client.fetch(peer, chunk.to_vec()).await?;
            for ad in ads {
                match self.accept(ad, Some(peer)).await {
                    Ok(crate::ledger::IngestOutcome::Accepted(_)) => report.pulled += 1,
                    Ok(_) => {}
                    Err(error) => tracing::debug!(peer = %peer, %error, "caught-up ad refused"),
                }
            }
        }
        Ok(report)
    }
}
