//! Replication: every ad a director accepts as newer goes to every other director.
//!
//! [`Replicator::accept`] is the one entry point for ads (from services, peers, catch-up
//! or this director itself): it ingests, and if the ad was newer, queues it for every
//! peer except the one it came from. Each peer has its own queue and worker, so a dead
//! or slow peer delays nobody else; queues coalesce by key and retry with backoff and
//! jitter. The same ad is never accepted twice, so forwarding stops by construction.
//! See `docs/replication.md`.

mod queue;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ad::{ServerKind, SignedAd};
use crate::client::Client;
use crate::ledger::{IngestError, IngestOutcome, Ledger};
use crate::metrics::Metrics;
use crate::peers::PeerSet;
use crate::store::StoredAd;

pub use queue::PeerQueue;
pub use sync::SyncReport;

/// Most ads sent in one forward request.
const BATCH: usize = 256;
/// Most bytes of JSON in one forward request (well under a peer's 1 MiB body limit).
const BATCH_BYTES: usize = 512 * 1024;
/// First retry delay after a failed forward; doubles up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Accepts ads and forwards the newer ones to every known peer.
pub struct Replicator {
    ledger: Arc<Ledger>,
    peers: Arc<PeerSet>,
    client: Client,
    metrics: Arc<Metrics>,
    queues: Mutex<HashMap<String, Arc<PeerQueue>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Replicator {
    /// A replicator whose workers run on `tracker` until `cancel`.
    pub fn new(
        ledger: Arc<Ledger>,
        peers: Arc<PeerSet>,
        client: Client,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            ledger,
            peers,
            client,
            metrics,
            queues: Mutex::new(HashMap::new()),
            tracker,
            cancel,
        })
    }

    /// The peer set.
    pub fn peers(&self) -> &Arc<PeerSet> {
        &self.peers
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The client used for peers.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ingests `signed`; if newer, queues it for every peer but `from`, then waits until
    /// it is durable. Forwarding starts before the local fsync: a peer makes its own
    /// durable copy, and only the answer to the sender waits for this one.
    pub async fn accept(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let result = self.apply_and_offer(signed, from);
        if let Ok(IngestOutcome::Accepted(_)) = &result {
            self.ledger.store().flush().await?;
        }
        result
    }

    /// Accepts an ad forwarded by a peer: like [`Replicator::accept`], but answers before
    /// the local fsync (which follows in the background). The peer keeps its own durable
    /// copy and this director would catch up from it after a crash, so the forwarder
    /// need not wait, and its queue does not stall behind this disk.
    pub fn accept_forwarded(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let result = self.apply_and_offer(signed, from);
        if let Ok(IngestOutcome::Accepted(_)) = &result {
            let store = self.ledger.store().clone();
            self.tracker.spawn(async move {
                if let Err(error) = store.flush().await {
                    tracing::error!(%error, "background flush failed");
                }
            });
        }
        result
    }

    fn apply_and_offer(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let result = self.ledger.apply(signed);
        let label = match &result {
            Ok(outcome) => outcome.status(),
            Err(IngestError::Untrusted(_)) => "forbidden",
            Err(IngestError::Invalid(_)) => "invalid",
            Err(IngestError::Store(_)) => "error",
        };
        self.metrics.ad_received(label);
        if let Ok(IngestOutcome::Accepted(stored)) = &result {
            if stored.ad.kind == ServerKind::Director {
                self.peers.note_director_ad(&stored.ad);
            }
            self.offer(stored.clone(), from);
        }
        result
    }

    /// Queues `ad` for every known peer except `except` (and never this director).
    pub fn offer(self: &Arc<Self>, ad: Arc<StoredAd>, except: Option<&str>) {
        let except = except.map(crate::peers::normalize);
        for url in self.peers.urls() {
            if Some(&url) == except.as_ref() || self.peers.is_self(&url) {
                continue;
            }
            self.queue_for(&url).push(ad.clone());
        }
    }

    /// Queues `ad` for one peer.
    pub fn send_to(self: &Arc<Self>, peer: &str, ad: Arc<StoredAd>) {
        if !self.peers.is_self(peer) {
            self.queue_for(&crate::peers::normalize(peer)).push(ad);
        }
    }

    /// Ads waiting for any peer (tests and the status page).
    pub fn backlog(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|q| q.len())
            .sum()
    }

    /// Ads waiting per peer (metrics).
    pub fn backlog_by_peer(&self) -> HashMap<String, usize> {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(url, q)| (url.clone(), q.len()))
            .collect()
    }

    fn queue_for(self: &Arc<Self>, url: &str) -> Arc<PeerQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = queues.get(url) {
            return queue.clone();
        }
        let queue = Arc::new(PeerQueue::default());
        queues.insert(url.to_string(), queue.clone());
        let this = self.clone();
        let url = url.to_string();
        let worker_queue = queue.clone();
        self.tracker
            .spawn(async move { this.forward_worker(url, worker_queue).await });
        queue
    }

    async fn forward_worker(self: Arc<Self>, peer: String, queue: Arc<PeerQueue>) {
        let mut failures: u32 = 0;
        loop {
            if queue.is_empty() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = queue.wait() => {}
                }
            }
            let (batch, body) = encode_batch(&queue);
            if batch.is_empty() {
                continue;
            }
            let sent = tokio::select! {
                _ = self.cancel.cancelled() => return,
                sent = self.client.forward_encoded(&peer, body, self.peers.self_url()) => sent,
            };
            match sent {
                Ok(results) => {
                    failures = 0;
                    for result in &results {
                        self.metrics.forwarded(&peer, &result.status);
                        if let Some(detail) = &result.detail {
                            tracing::warn!(peer = %peer, %detail, "peer refused a forwarded ad");
                        }
                    }
                    if self.peers.mark_ok(&peer) {
                        self.spawn_sync(peer.clone());
                    }
                }
                Err(error) if error.is_definitive_refusal() => {
                    // The peer answered and refused the request itself (not one ad):
                    // sending the same bytes again cannot succeed.
                    self.metrics.forwarded(&peer, "rejected");
                    self.peers.mark_ok(&peer);
                    tracing::error!(peer = %peer, %error, ads = batch.len(), "peer rejected a forward batch; dropped");
                }
                Err(error) => {
                    self.metrics.forwarded(&peer, "error");
                    self.peers.mark_failed(&peer, &error.to_string());
                    queue.put_back(batch);
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Starts a catch-up with `peer` in the background.
    pub fn spawn_sync(self: &Arc<Self>, peer: String) {
        let this = self.clone();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                result = this.sync_with(&peer) => match result {
                    Ok(report) if report.pulled + report.pushed > 0 => {
                        tracing::info!(peer = %peer, pulled = report.pulled, pushed = report.pushed, "caught up with peer");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        this.peers.mark_failed(&peer, &error.to_string());
                    }
                }
            }
        });
    }
}

/// Takes ads from `queue` into one JSON array of at most [`BATCH`] ads and about
/// [`BATCH_BYTES`] bytes (always at least one ad); the rest goes back.
fn encode_batch(queue: &PeerQueue) -> (Vec<Arc<StoredAd>>, Vec<u8>) {
    let taken = queue.take(BATCH);
    let mut body = b"[".to_vec();
    let mut batch = Vec::with_capacity(taken.len());
    let mut rest = Vec::new();
    for ad in taken {
        let Ok(json) = serde_json::to_vec(&ad.signed()) else {
            continue;
        };
        if !batch.is_empty() && body.len() + json.len() + 2 > BATCH_BYTES {
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

    #[test]
    fn batches_stay_under_the_byte_budget_and_keep_the_rest() {
        use crate::fixtures;
        let queue = PeerQueue::default();
        let many: Vec<String> = (0..2000).map(|i| format!("/ns/{i:04}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        for i in 0..20 {
            let name = format!("origin-{i}");
            let ad = fixtures::ad(&name, ServerKind::Origin, &refs, 10, 1);
            queue.push(Arc::new(StoredAd::new(
                ad.sign(&fixtures::key_for(&name)),
                10,
                u64::MAX,
            )));
        }
        let (batch, body) = encode_batch(&queue);
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
