//! One peer's forward worker: offers versions, sends the full ads the peer lacks.
//!
//! Ads wait in the peer's [`PeerQueue`] for `peers.forward_delay`; the worker then
//! offers them as `(key, version)` entries (`POST /api/v1.0/director/forward/offer`) and
//! sends in full (`POST /api/v1.0/director/forward`) only those the peer answers it
//! lacks. When every server reaches every director itself, an offer finds them all held
//! and no full ad crosses: forwarding is the repair path. See `docs/replication.md`.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::Replicator;
use super::queue::PeerQueue;
use crate::ad::ServerKind;
use crate::ad::StoredAd;
use crate::client::ClientError;
use crate::peers::Link;
use crate::wire::DigestEntry;

/// Most ads sent in one forward request.
const BATCH: usize = 256;
/// Most bytes of JSON in one forward request (well under a peer's 1 MiB body limit).
const BATCH_BYTES: usize = 512 * 1024;
/// Most entries in one offer (about 150 bytes of JSON each).
const OFFER_BATCH: usize = 2_048;
/// First retry delay after a failed forward; doubles up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How big a forward request may be; a peer's 413 halves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchLimit {
    ads: usize,
    bytes: usize,
    offers: usize,
}

impl Default for BatchLimit {
    fn default() -> Self {
        Self {
            ads: BATCH,
            bytes: BATCH_BYTES,
            offers: OFFER_BATCH,
        }
    }
}

/// What one send did, for the worker's loop.
enum Sent {
    /// The peer answered.
    Ok,
    /// The peer was unreachable or failed: back off.
    Failed,
}

/// The worker's state between sends.
struct Worker {
    peer: String,
    link: Link,
    limit: BatchLimit,
    failures: u32,
    /// The peer answered an offer with 404 or 405 (a director from before offers):
    /// everything goes to it in full.
    no_offers: bool,
    /// The peer came back after failures: sync now.
    back: bool,
}

impl Replicator {
    /// One peer's worker, one `select!` over its cancellation, its queue and its sync
    /// timer. It first sends this director's own ad (so the peer learns of it without
    /// waiting for an announce) and catches up in both directions; then it offers and
    /// forwards what is queued and syncs every [`PeerSet::sync_period`] and whenever the
    /// peer comes back. It ends when the peer is forgotten or the director stops.
    ///
    /// [`PeerSet::sync_period`]: crate::peers::PeerSet::sync_period
    pub(crate) async fn run_peer(self: Arc<Self>, peer: String, link: Link) {
        let _running = self.peers.worker_started();
        let own = crate::ad::AdKey {
            kind: ServerKind::Director,
            name: self.peers.self_name().to_string(),
        };
        if let Some(own) = self.ledger.view().get(&own).cloned() {
            link.queue.push(own);
        }
        // Ads to offer that fell due within half a delay go in one offer.
        let slack = self.peers.forward_delay() / 2;
        let mut worker = Worker {
            peer,
            link,
            limit: BatchLimit::default(),
            failures: 0,
            no_offers: false,
            back: false,
        };
        let cancel = worker.link.cancel.clone();
        let mut sync_at = tokio::time::Instant::now();
        // The first sync skips ads accepted in its last seconds (they are normally in
        // flight); ads accepted just before this peer was verified were offered to no
        // one, so a second sync follows soon after the first.
        let mut follow_up = Some(Duration::from_secs(3));
        loop {
            let next = worker.link.queue.next_wake(slack);
            if next.is_none_or(|at| at > tokio::time::Instant::now()) {
                let wake = next.map_or(sync_at, |at| at.min(sync_at));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = worker.link.queue.wait() => {}
                    _ = worker.link.sync_now.notified() => sync_at = tokio::time::Instant::now(),
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            if sync_at <= tokio::time::Instant::now() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.sync_logged(&worker.peer) => {}
                }
                let period = follow_up.take().unwrap_or_else(|| self.peers.sync_period());
                sync_at = tokio::time::Instant::now() + period;
                continue;
            }
            let due = worker.link.queue.take_due(
                tokio::time::Instant::now(),
                worker.limit.ads,
                worker.limit.offers,
            );
            let sent = tokio::select! {
                _ = cancel.cancelled() => return,
                sent = async {
                    if !due.wanted.is_empty() {
                        Some(self.send_full(&mut worker, due.wanted).await)
                    } else if !due.to_offer.is_empty() {
                        Some(self.send_offer(&mut worker, due.to_offer).await)
                    } else {
                        None
                    }
                } => sent,
            };
            match sent {
                Some(Sent::Ok) => {
                    worker.failures = 0;
                    if std::mem::take(&mut worker.back) {
                        sync_at = tokio::time::Instant::now();
                    }
                }
                Some(Sent::Failed) => {
                    worker.failures = worker.failures.saturating_add(1);
                    let delay = backoff(worker.failures);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                None => {}
            }
        }
    }

    /// Sends `ads` in full (as many as one request holds; the rest goes back).
    async fn send_full(&self, worker: &mut Worker, ads: Vec<Arc<StoredAd>>) -> Sent {
        let peer = worker.peer.as_str();
        let queue = &worker.link.queue;
        let (batch, body) = encode_batch(queue, ads, worker.limit);
        if batch.is_empty() {
            return Sent::Ok;
        }
        let sent_bytes = body.len();
        match self
            .client
            .forward_encoded(peer, body, self.peers.self_url())
            .await
        {
            Ok(results) => {
                for result in &results {
                    self.metrics.forwarded(peer, &result.status);
                    if let Some(detail) = &result.detail {
                        tracing::warn!(peer = %peer, %detail, "peer refused a forwarded ad");
                    }
                }
                worker.back |= self.peers.mark_ok(peer);
                Sent::Ok
            }
            Err(error) if error.status() == Some(413) && batch.len() > 1 => {
                // The peer takes smaller bodies than this director sends: halve and
                // send again (nothing is dropped; one ad always goes alone at last).
                worker.limit.ads = (batch.len() / 2).max(1);
                worker.limit.bytes = (sent_bytes / 2).max(1);
                self.metrics.forwarded(peer, "too_large");
                self.peers.mark_ok(peer);
                tracing::info!(peer = %peer, ads = worker.limit.ads, bytes = worker.limit.bytes, "peer refused a batch as too large; halving");
                queue.put_back(batch);
                Sent::Ok
            }
            Err(error) if error.is_definitive_refusal() => {
                // The peer answered and refused the request itself (not one ad):
                // sending the same bytes again cannot succeed.
                self.metrics.forwarded(peer, "rejected");
                self.peers.mark_ok(peer);
                tracing::error!(peer = %peer, %error, ads = batch.len(), "peer rejected a forward batch; dropped");
                Sent::Ok
            }
            Err(error) => {
                self.metrics.forwarded(peer, "error");
                self.peers.mark_failed(peer, &error.to_string());
                queue.put_back(batch);
                Sent::Failed
            }
        }
    }

    /// Offers `ads` by version; those the peer lacks go back in the queue, wanted and
    /// due now, and the others are done.
    async fn send_offer(&self, worker: &mut Worker, ads: Vec<Arc<StoredAd>>) -> Sent {
        let peer = worker.peer.as_str();
        let queue = &worker.link.queue;
        if worker.no_offers {
            queue.put_back(ads);
            return Sent::Ok;
        }
        let entries: Vec<DigestEntry> = ads
            .iter()
            .map(|a| DigestEntry {
                key: a.ad.key(),
                version: a.ad.version(),
            })
            .collect();
        match self
            .client
            .offer(peer, &entries, self.peers.self_url())
            .await
        {
            Ok(answer) => {
                let mut wanted = vec![false; ads.len()];
                for i in answer.wanted {
                    if let Some(w) = wanted.get_mut(i) {
                        *w = true;
                    }
                }
                let (lacking, held): (Vec<_>, Vec<_>) =
                    ads.into_iter().zip(wanted).partition(|(_, w)| *w);
                self.metrics.offered(peer, "held", held.len() as u64);
                self.metrics.offered(peer, "wanted", lacking.len() as u64);
                queue.put_back(lacking.into_iter().map(|(ad, _)| ad).collect());
                worker.back |= self.peers.mark_ok(peer);
                Sent::Ok
            }
            Err(error) => self.offer_failed(worker, ads, &error),
        }
    }

    fn offer_failed(
        &self,
        worker: &mut Worker,
        ads: Vec<Arc<StoredAd>>,
        error: &ClientError,
    ) -> Sent {
        let peer = worker.peer.as_str();
        let queue = &worker.link.queue;
        match error.status() {
            Some(404 | 405) => {
                tracing::info!(peer = %peer, "peer takes no offers (an older director); forwarding in full");
                worker.no_offers = true;
                self.peers.mark_ok(peer);
                queue.put_back(ads);
                Sent::Ok
            }
            Some(413) if ads.len() > 1 => {
                worker.limit.offers = (ads.len() / 2).max(1);
                self.peers.mark_ok(peer);
                queue.put_back_offers(ads);
                Sent::Ok
            }
            _ if error.is_definitive_refusal() => {
                // The offer itself was refused: send those ads in full instead.
                tracing::warn!(peer = %peer, %error, "peer refused an offer; forwarding in full");
                self.peers.mark_ok(peer);
                queue.put_back(ads);
                Sent::Ok
            }
            _ => {
                self.metrics.offered(peer, "error", ads.len() as u64);
                self.peers.mark_failed(peer, &error.to_string());
                queue.put_back_offers(ads);
                Sent::Failed
            }
        }
    }
}

/// Encodes `ads` into one JSON array of at most `limit.ads` ads and about `limit.bytes`
/// bytes (always at least one ad); the rest goes back to `queue`.
fn encode_batch(
    queue: &PeerQueue,
    ads: Vec<Arc<StoredAd>>,
    limit: BatchLimit,
) -> (Vec<Arc<StoredAd>>, Vec<u8>) {
    let mut body = b"[".to_vec();
    let mut batch = Vec::with_capacity(ads.len().min(limit.ads));
    let mut rest = Vec::new();
    for ad in ads {
        if batch.len() >= limit.ads {
            rest.push(ad);
            continue;
        }
        let Ok(json) = serde_json::to_vec(&ad.signed()) else {
            continue;
        };
        if !batch.is_empty() && body.len() + json.len() + 2 > limit.bytes {
            rest.push(ad);
            continue;
        }
        if !batch.is_empty() {
            body.push(b',');
        }
        body.extend_from_slice(&json);
        batch.push(ad);
    }
    body.push(b']');
    queue.put_back(rest);
    (batch, body)
}

/// Exponential backoff with ±50% jitter.
fn backoff(failures: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << failures.min(10).saturating_sub(1));
    let capped = exp.min(MAX_BACKOFF);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::SignedAd;

    #[test]
    fn batches_stay_under_the_byte_budget_and_keep_the_rest() {
        use crate::fixtures;
        let queue = PeerQueue::default();
        let many: Vec<String> = (0..2000).map(|i| format!("/ns/{i:04}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut ads = Vec::new();
        for i in 0..20 {
            let name = format!("origin-{i}");
            let ad = fixtures::ad(&name, ServerKind::Origin, &refs, 10, 1);
            ads.push(Arc::new(StoredAd::new(
                ad.sign(&fixtures::key_for(&name)),
                10,
                u64::MAX,
            )));
        }
        let (batch, body) = encode_batch(&queue, ads, BatchLimit::default());
        assert!(!batch.is_empty() && batch.len() < 20, "{} ads", batch.len());
        assert!(body.len() <= BATCH_BYTES, "{} bytes", body.len());
        let parsed: Vec<SignedAd> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.len(), batch.len());
        assert_eq!(
            queue.len(),
            20 - batch.len(),
            "the rest waits for the next batch"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(150));
        assert!(backoff(4) >= Duration::from_millis(400));
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.5));
    }
}
