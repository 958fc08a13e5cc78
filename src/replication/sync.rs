//! Catch-up and anti-entropy: compare digests with a peer, pull what it has newer,
//! queue for it what this director has newer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::ad::{SignedAd, is_newer};
use crate::client::ClientError;
use crate::ledger::IngestOutcome;
use crate::wire::DigestAnswer;

use super::digest;

use super::Replicator;

/// Most keys fetched per request (a peer serves up to 10,000): a page is verified in
/// Ed25519 batches split over the cores, which pay off from a few hundred signatures and
/// keep getting cheaper per signature up to a thousand or so.
const FETCH_CHUNK: usize = 2048;

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
        let in_scope = |ad: &crate::ad::Ad| {
            scope
                .as_ref()
                .is_none_or(|s| s.contains(&digest::bucket_of_parts(ad.kind, &ad.name)))
        };
        for ad in view
            .ads()
            .filter(|a| a.expires_at > now && a.received_at <= settled)
            .filter(|a| in_scope(&a.ad))
        {
            let key = ad.ad.key();
            if is_newer(ad.ad.version(), their_versions.get(&key).copied()) {
                queue.push(ad.clone());
                report.pushed += 1;
            }
        }
        self.peers
            .note_sync(peer, want.is_empty() && report.pushed == 0);
        // Pipelined: page N+1 is fetched while page N is verified and held.
        let mut pages = want.chunks(FETCH_CHUNK);
        let mut fetched = match pages.next() {
            Some(keys) => self.client.fetch(peer, keys.to_vec()).await?,
            None => Vec::new(),
        };
        for keys in pages {
            let (next, pulled) = tokio::join!(
                self.client.fetch(peer, keys.to_vec()),
                self.hold_page(std::mem::take(&mut fetched), peer)
            );
            report.pulled += pulled;
            fetched = next?;
        }
        report.pulled += self.hold_page(fetched, peer).await;
        if report.pulled > 0 {
            // Every page's flush has started; this one returns once all are durable.
            if let Err(error) = self.ledger.store().flush().await {
                tracing::error!(peer = %peer, %error, "flushing caught-up ads failed");
            }
        }
        Ok(report)
    }

    /// Verifies and holds one pulled page (off the async runtime: the signatures are
    /// verified on every core, in batches), offers the newer ads to the other peers, and
    /// starts one flush for the page, which runs while the next page is checked (the sync
    /// waits for the last one). Nothing here is acknowledged to anyone, so a crash before
    /// the flush only means pulling them again. Returns how many were newer.
    async fn hold_page(self: &Arc<Self>, page: Vec<SignedAd>, peer: &str) -> usize {
        if page.is_empty() {
            return 0;
        }
        // A Pelican ad's check may need the registry's keys: fetched now, not while held.
        for ad in page.iter().filter(|ad| ad.attestation.is_some()) {
            self.ledger.prepare(ad).await;
        }
        let ledger = self.ledger.clone();
        let answers = match tokio::task::spawn_blocking(move || ledger.apply_many(page)).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::error!(peer = %peer, %error, "checking a caught-up page failed");
                return 0;
            }
        };
        let mut accepted = 0;
        for answer in &answers {
            self.applied(answer, Some(peer));
            match answer {
                Ok(IngestOutcome::Accepted(_)) => accepted += 1,
                Ok(_) => {}
                Err(error) => tracing::debug!(peer = %peer, %error, "caught-up ad refused"),
            }
        }
        if accepted > 0 {
            let store = self.ledger.store().clone();
            self.tracker.spawn(async move {
                if let Err(error) = store.flush().await {
                    // The sync's last flush reports a failure that lasts.
                    tracing::debug!(%error, "flushing a caught-up page failed");
                }
            });
        }
        accepted
    }
}
