//! Replication: every ad a director accepts as newer goes to every other director.
//!
//! [`Replicator::accept`] is the one entry point for ads (from services, peers, catch-up
//! or this director itself): it ingests, and if the ad was newer, queues it for every
//! verified peer except the one it came from. Each peer's queue, worker and sync
//! schedule belong to its [`Link`](crate::peers::Link), owned by the [`PeerSet`]: a
//! dead or slow peer delays nobody else, and a forgotten peer's worker stops. Queues
//! coalesce by key and retry with backoff and jitter. The same ad is never accepted
//! twice, so forwarding stops by construction. See `docs/replication.md`.

pub mod digest;
mod queue;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ad::StoredAd;
use crate::ad::{ServerKind, SignedAd};
use crate::client::Client;
use crate::ledger::{IngestError, IngestOutcome, Ledger};
use crate::metrics::Metrics;
use crate::peers::{Link, PeerSet, PeerTiming, SelfInfo};

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

/// Accepts ads and forwards the newer ones to every verified peer.
pub struct Replicator {
    ledger: Arc<Ledger>,
    peers: Arc<PeerSet>,
    client: Client,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
}

/// How big a forward request may be; a peer's 413 halves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchLimit {
    ads: usize,
    bytes: usize,
}

impl Default for BatchLimit {
    fn default() -> Self {
        Self {
            ads: BATCH,
            bytes: BATCH_BYTES,
        }
    }
}

impl Replicator {
    /// A replicator whose peer workers run on `tracker` until `cancel`. It owns the
    /// peer set (membership and each peer's work); its probe worker starts here.
    pub fn new(
        ledger: Arc<Ledger>,
        me: SelfInfo,
        timing: PeerTiming,
        client: Client,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let replicator = Arc::new_cyclic(|weak| {
            let peers = PeerSet::load(
                me,
                ledger.store().clone(),
                ledger.clock().clone(),
                timing,
                weak.clone(),
                tracker.clone(),
                cancel.clone(),
            );
            Self {
                ledger,
                peers: Arc::new(peers),
                client,
                metrics,
                tracker,
            }
        });
        replicator.tracker.spawn(replicator.peers.clone().run());
        replicator
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
    /// durable copy, and only the answer to the sender waits for this one. A
    /// `duplicate` answer waits too: the first copy may still be in the group commit.
    pub async fn accept(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        self.ledger.prepare(&signed).await;
        let result = self.apply_and_offer(signed, from);
        if let Ok(IngestOutcome::Accepted(_) | IngestOutcome::Duplicate) = &result {
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
                    // The commit logs the first failure of a run at ERROR; not every ad.
                    tracing::debug!(%error, "background flush failed");
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
                self.peers.note_director_ad(&stored.signed());
            }
            self.offer(stored.clone(), from);
        }
        result
    }

    /// Queues `ad` for every verified peer except `except` (by any of its URLs).
    pub fn offer(self: &Arc<Self>, ad: Arc<StoredAd>, except: Option<&str>) {
        for (_, link) in self.peers.links_except(except) {
            link.queue.push(ad.clone());
        }
    }

    /// Ads waiting for any peer (tests and the status page).
    pub fn backlog(&self) -> usize {
        self.peers
            .links_except(None)
            .iter()
            .map(|(_, link)| link.queue.len())
            .sum()
    }

    /// Ads waiting for one peer.
    pub fn backlog_of(&self, peer: &str) -> usize {
        self.peers.link(peer).map_or(0, |link| link.queue.len())
    }

    /// The queue of the peer at `url`; a detached one (whose ads go nowhere) if it is
    /// not, or no longer, a verified peer.
    fn queue_for(&self, url: &str) -> Arc<PeerQueue> {
        match self.peers.link(url) {
            Some(link) => link.queue,
            None => Arc::new(PeerQueue::default()),
        }
    }

    /// One peer's worker, one `select!` over its cancellation, its queue and its sync
    /// timer. It first sends this director's own ad (so the peer learns of it without
    /// waiting for an announce) and catches up in both directions; then it forwards
    /// what is queued and syncs every [`PeerSet::sync_period`] and whenever the peer
    /// comes back. It ends when the peer is forgotten or the director stops.
    pub(crate) async fn run_peer(self: Arc<Self>, peer: String, link: Link) {
        let _running = self.peers.worker_started();
        let own = crate::ad::AdKey {
            kind: ServerKind::Director,
            name: self.peers.self_name().to_string(),
        };
        if let Some(own) = self.ledger.view().get(&own).cloned() {
            link.queue.push(own);
        }
        let mut failures: u32 = 0;
        let mut limit = BatchLimit::default();
        let mut sync_at = tokio::time::Instant::now();
        // The first sync skips ads accepted in its last seconds (they are normally in
        // flight); ads accepted just before this peer was verified were offered to no
        // one, so a second sync follows soon after the first.
        let mut follow_up = Some(Duration::from_secs(3));
        loop {
            if link.queue.is_empty() {
                tokio::select! {
                    _ = link.cancel.cancelled() => return,
                    _ = link.queue.wait() => {}
                    _ = link.sync_now.notified() => sync_at = tokio::time::Instant::now(),
                    _ = tokio::time::sleep_until(sync_at) => {}
                }
            }
            if sync_at <= tokio::time::Instant::now() {
                tokio::select! {
                    _ = link.cancel.cancelled() => return,
                    _ = self.sync_logged(&peer) => {}
                }
                let period = follow_up.take().unwrap_or_else(|| self.peers.sync_period());
                sync_at = tokio::time::Instant::now() + period;
                continue;
            }
            let (batch, body) = encode_batch(&link.queue, limit);
            if batch.is_empty() {
                continue;
            }
            let sent_bytes = body.len();
            let sent = tokio::select! {
                _ = link.cancel.cancelled() => return,
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
                        sync_at = tokio::time::Instant::now();
                    }
                }
                Err(error) if error.status() == Some(413) && batch.len() > 1 => {
                    // The peer takes smaller bodies than this director sends: halve and
                    // send again (nothing is dropped; one ad always goes alone at last).
                    limit = BatchLimit {
                        ads: (batch.len() / 2).max(1),
                        bytes: (sent_bytes / 2).max(1),
                    };
                    self.metrics.forwarded(&peer, "too_large");
                    self.peers.mark_ok(&peer);
                    tracing::info!(peer = %peer, ads = limit.ads, bytes = limit.bytes, "peer refused a batch as too large; halving");
                    link.queue.put_back(batch);
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
                    link.queue.put_back(batch);
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tokio::select! {
                        _ = link.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn sync_logged(self: &Arc<Self>, peer: &str) {
        match self.sync_with(peer).await {
            Ok(report) => {
                if report.pulled + report.pushed > 0 {
                    tracing::info!(peer = %peer, pulled = report.pulled, pushed = report.pushed, "caught up with peer");
                }
                self.ledger.recovery().sync_succeeded(peer);
            }
            Err(error) => {
                self.peers.mark_failed(peer, &error.to_string());
                self.ledger.recovery().sync_failed(peer);
            }
        }
    }
}

/// Takes ads from `queue` into one JSON array of at most `limit.ads` ads and about
/// `limit.bytes` bytes (always at least one ad); the rest goes back.
fn encode_batch(queue: &PeerQueue, limit: BatchLimit) -> (Vec<Arc<StoredAd>>, Vec<u8>) {
    let taken = queue.take(limit.ads);
    let mut body = b"[".to_vec();
    let mut batch = Vec::with_capacity(taken.len());
    let mut rest = Vec::new();
    for ad in taken {
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
        let (batch, body) = encode_batch(&queue, BatchLimit::default());
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

    #[tokio::test]
    async fn a_duplicate_answer_waits_for_the_first_copys_fsync() {
        use crate::fixtures;
        use crate::ledger::AdLimits;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let clock: crate::clock::SharedClock = crate::clock::ManualClock::new(1_000_000);
        let trust = fixtures::trust(&[("o", ServerKind::Origin, &["/o"])]);
        let limits = AdLimits {
            max_lifetime: Duration::from_secs(900),
            max_clock_skew: Duration::from_secs(300),
        };
        let ledger = Arc::new(Ledger::open(store.clone(), trust, clock, limits).unwrap().0);
        let replicator = Replicator::new(
            ledger.clone(),
            SelfInfo {
                url: "http://me:1".into(),
                uuid: uuid::Uuid::from_u128(7),
                name: "me".into(),
            },
            PeerTiming {
                poll_interval: Duration::from_secs(60),
                max_candidates: 4,
                forget_after: Duration::from_secs(3600),
            },
            Client::new(Duration::from_secs(1), None).unwrap(),
            Arc::new(Metrics::default()),
            TaskTracker::new(),
            CancellationToken::new(),
        );
        let mut ad = fixtures::ad("o", ServerKind::Origin, &["/o"], 999_000, 1);
        ad.expires_at = 1_500_000;
        let signed = ad.sign(&fixtures::key_for("o"));
        // The first copy is applied (a forward, say) and its group commit not yet done.
        assert!(matches!(
            ledger.apply(signed.clone()).unwrap(),
            IngestOutcome::Accepted(_)
        ));
        assert!(store.has_unflushed_writes());
        // A service sending the same ad is told `duplicate` only once it is durable.
        let outcome = replicator.accept(signed, None).await.unwrap();
        assert!(matches!(outcome, IngestOutcome::Duplicate));
        assert!(!store.has_unflushed_writes());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(150));
        assert!(backoff(4) >= Duration::from_millis(400));
        assert!(backoff(30) <= MAX_BACKOFF.mul_f64(1.5));
    }
}
