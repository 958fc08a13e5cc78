//! Catch-up and anti-entropy: compare digests with a peer, pull what it has newer,
//! queue for it what this director has newer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ad::is_newer;
use crate::client::ClientError;
use crate::wire::DigestAnswer;

use super::digest;

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
    /// Digest buckets that differed (0: in sync).
    pub differing_buckets: usize,
}

impl Replicator {
    /// One digest exchange with `peer`.
    pub async fn sync_with(self: &Arc<Self>, peer: &str) -> Result<SyncReport, ClientError> {
        let answer = self.client.digest_summary(peer).await?;
        if self.peers.mark_ok(peer) {
            tracing::info!(peer = %peer, "director reachable again");
        }
        let view = self.ledger.view();
        let now = self.ledger.clock().now_ms();
        // Only the buckets whose hashes differ are compared entry by entry.
        let (theirs, scope) = match answer {
            DigestAnswer::Summary(summary) => {
                let differ = digest::differing(&digest::summarise(&view, now), &summary.buckets);
                if differ.is_empty() {
                    self.peers.note_sync(peer, true);
                    return Ok(SyncReport::default());
                }
                let mut buckets: Vec<usize> = differ.iter().copied().collect();
                buckets.sort_unstable();
                (
                    self.client.digest_buckets(peer, &buckets).await?,
                    Some(differ),
                )
            }
            DigestAnswer::Full(entries) => (entries, None),
        };
        let mut report = SyncReport {
            differing_buckets: scope.as_ref().map_or(digest::BUCKETS, HashSet::len),
            ..SyncReport::default()
        };
        let their_versions: HashMap<_, _> = theirs.iter().map(|e| (&e.key, e.version)).collect();
        let want: Vec<_> = theirs
            .iter()
            .filter(|e| is_newer(e.version, view.get(&e.key).map(|a| a.ad.version())))
            .map(|e| e.key.clone())
            .collect();
        let queue = self.queue_for(&crate::peers::normalize(peer));
        let settled = now.saturating_sub(PUSH_GRACE_MS);
        let in_scope = |key: &crate::ad::AdKey| {
            scope
                .as_ref()
                .is_none_or(|s| s.contains(&digest::bucket_of(key)))
        };
        for ad in view
            .ads()
            .filter(|a| a.expires_at > now && a.received_at <= settled)
            .filter(|a| in_scope(&a.ad.key()))
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
            // Applied one by one (each routed at once), made durable once per batch: a
            // director refilling a whole view pays one fsync per FETCH_CHUNK ads, not one
            // per ad. Nothing here is acknowledged to anyone, so a crash before the flush
            // only means pulling them again.
            let mut accepted = 0;
            for ad in ads {
                match self.apply_and_offer(ad, Some(peer)) {
                    Ok(crate::ledger::IngestOutcome::Accepted(_)) => accepted += 1,
                    Ok(_) => {}
                    Err(error) => tracing::debug!(peer = %peer, %error, "caught-up ad refused"),
                }
            }
            if accepted > 0 {
                if let Err(error) = self.ledger.store().flush().await {
                    tracing::error!(peer = %peer, %error, "flushing caught-up ads failed");
                }
                report.pulled += accepted;
            }
        }
        Ok(report)
    }
}
