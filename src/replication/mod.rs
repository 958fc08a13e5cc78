//! Replication: every ad a director accepts as newer goes to every other director.
//!
//! [`Replicator::accept`] is the one entry point for ads (from services, peers, catch-up
//! or this director itself): it ingests, and if the ad was newer, queues it for every
//! verified peer except the one it came from. Each peer's queue, worker and sync
//! schedule belong to its [`Link`](crate::peers::Link), owned by the [`PeerSet`]: a
//! dead or slow peer delays nobody else, and a forgotten peer's worker stops. Queues
//! coalesce by key, wait `peers.forward_delay` and offer versions before
//! sending full ads (forwarding is the repair path), and retry with backoff and jitter. The same ad is never accepted
//! twice, so forwarding stops by construction. See `docs/replication.md`.

pub mod digest;
mod forward;
mod intake;
mod queue;
mod sync;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ad::StoredAd;
use crate::ad::{ServerKind, SignedAd};
use crate::client::Client;
use crate::ledger::{IngestError, IngestOutcome, Ledger};
use crate::metrics::Metrics;
use crate::peers::{PeerSet, PeerTiming, SelfInfo};

pub use queue::PeerQueue;
pub use sync::SyncReport;

/// Accepts ads and forwards the newer ones to every verified peer.
pub struct Replicator {
    ledger: Arc<Ledger>,
    peers: Arc<PeerSet>,
    client: Client,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    /// Where [`Replicator::accept`] takes ads in, in batches (services' ads, this
    /// director's own, peers' director ads).
    intake: intake::Intake,
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
            let intake = intake::Intake::start(weak.clone(), ledger.store().path().to_path_buf());
            Self {
                ledger,
                peers: Arc::new(peers),
                client,
                metrics,
                tracker,
                intake,
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

    /// Ingests `signed` with the ads arriving around it (one signature batch and one view
    /// per batch: see `intake`); if newer, queues it for every peer but `from`, then
    /// waits until it is durable. Forwarding starts before the local fsync: a peer makes
    /// its own durable copy, and only the answer to the sender waits for this one. A
    /// `duplicate` answer waits too: the first copy may still be in the group commit.
    pub async fn accept(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        self.ledger.prepare(&signed).await;
        let result = self.intake.take_in(signed, from).await;
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

    /// Accepts a batch from a peer (forwarded, or a caught-up page) like
    /// [`Replicator::accept_forwarded`], all together: one signature batch and one new
    /// view, then one background flush (the next page is checked while it runs).
    pub async fn accept_forwarded_many(
        self: &Arc<Self>,
        ads: Vec<SignedAd>,
        from: Option<&str>,
    ) -> Vec<Result<IngestOutcome, IngestError>> {
        let sources = vec![from; ads.len()];
        let results = self.apply_together(ads, &sources).await;
        if results
            .iter()
            .any(|r| matches!(r, Ok(IngestOutcome::Accepted(_))))
        {
            let store = self.ledger.store().clone();
            self.tracker.spawn(async move {
                if let Err(error) = store.flush().await {
                    tracing::debug!(%error, "background flush failed");
                }
            });
        }
        results
    }

    /// Applies `ads` together (one Ed25519 batch and one new view: a lone ad on this task,
    /// more on the blocking pool, as checking them takes a millisecond or more), then
    /// counts each and queues each newer one for every peer but its source (`sources`,
    /// one per ad). One answer per ad, in order. Not yet durable.
    async fn apply_together(
        self: &Arc<Self>,
        ads: Vec<SignedAd>,
        sources: &[Option<&str>],
    ) -> Vec<Result<IngestOutcome, IngestError>> {
        let results: Vec<_> = if ads.len() == 1 {
            // Handing one check to another thread would cost more than the check.
            ads.into_iter().map(|ad| self.ledger.apply(ad)).collect()
        } else {
            let ledger = self.ledger.clone();
            let count = ads.len();
            match tokio::task::spawn_blocking(move || ledger.apply_many(ads)).await {
                Ok(results) => results,
                Err(error) => {
                    tracing::error!(%error, "applying a batch of ads failed");
                    let store = self.ledger.store().path();
                    (0..count)
                        .map(|_| Err(intake::not_taken_in(store, "the batch check failed")))
                        .collect()
                }
            }
        };
        for (result, from) in results.iter().zip(sources) {
            self.applied(result, *from);
        }
        results
    }

    fn apply_and_offer(
        self: &Arc<Self>,
        signed: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let result = self.ledger.apply(signed);
        self.applied(&result, from);
        result
    }

    /// Counts what became of an ad and, if it was newer, queues it for every peer but
    /// `from`.
    fn applied(self: &Arc<Self>, result: &Result<IngestOutcome, IngestError>, from: Option<&str>) {
        let label = match result {
            Ok(outcome) => outcome.status(),
            Err(IngestError::Untrusted(_)) => "forbidden",
            Err(IngestError::Invalid(_)) => "invalid",
            Err(IngestError::Store(_)) => "error",
        };
        self.metrics.ad_received(label);
        if let Ok(IngestOutcome::Accepted(stored)) = result {
            if stored.ad.kind == ServerKind::Director {
                self.peers.note_director_ad(&stored.signed());
            }
            self.offer(stored.clone(), from);
        }
    }

    /// Queues `ad` for every verified peer except `except` (by any of its URLs): to be
    /// offered after `peers.forward_delay` (by then a peer that the server reaches itself
    /// holds it, and answers so), or at once in full when the delay is zero and for
    /// director ads (membership should not wait).
    pub fn offer(self: &Arc<Self>, ad: Arc<StoredAd>, except: Option<&str>) {
        let delay = self.peers.forward_delay();
        let at_once = delay.is_zero() || ad.ad.kind == ServerKind::Director;
        let due = tokio::time::Instant::now() + delay;
        for (_, link) in self.peers.links_except(except) {
            if at_once {
                link.queue.push(ad.clone());
            } else {
                link.queue.push_offer(ad.clone(), due);
            }
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

    async fn sync_logged(self: &Arc<Self>, peer: &str) {
        match self.sync_with(peer).await {
            Ok(report) => {
                if report.pulled + report.pushed > 0 {
                    tracing::info!(peer = %peer, pulled = report.pulled, pushed = report.pushed, "caught up with peer");
                }
                if self.ledger.recovery().sync_succeeded(peer) {
                    self.ledger.forget_damage().await;
                }
                self.metrics.synced();
            }
            Err(error) => {
                self.peers.mark_failed(peer, &error.to_string());
                self.ledger.recovery().sync_failed(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::fixtures;
    use crate::ledger::AdLimits;
    use futures::future::join_all;

    /// A replicator with no peers over a fresh store, trusting origins `names` (each
    /// serving `/<name>`), its clock at 1,000,000 ms.
    fn replicator(dir: &std::path::Path, names: &[String]) -> Arc<Replicator> {
        let store = crate::store::Store::open(dir).unwrap();
        let clock: crate::clock::SharedClock = crate::clock::ManualClock::new(1_000_000);
        let namespaces: Vec<String> = names.iter().map(|n| format!("/{n}")).collect();
        let served: Vec<[&str; 1]> = namespaces.iter().map(|ns| [ns.as_str()]).collect();
        let servers: Vec<(&str, ServerKind, &[&str])> = names
            .iter()
            .zip(&served)
            .map(|(name, ns)| (name.as_str(), ServerKind::Origin, &ns[..]))
            .collect();
        let trust = fixtures::trust(&servers);
        let limits = AdLimits {
            max_lifetime: Duration::from_secs(900),
            max_clock_skew: Duration::from_secs(300),
        };
        let ledger = Arc::new(Ledger::open(store, trust, clock, limits).unwrap().0);
        Replicator::new(
            ledger,
            SelfInfo {
                url: "http://me:1".into(),
                uuid: uuid::Uuid::from_u128(7),
                name: "me".into(),
            },
            PeerTiming {
                poll_interval: Duration::from_secs(60),
                max_candidates: 4,
                forget_after: Duration::from_secs(3600),
                forward_delay: Duration::from_secs(2),
            },
            Client::new(Duration::from_secs(1), None).unwrap(),
            Arc::new(Metrics::default()),
            TaskTracker::new(),
            CancellationToken::new(),
        )
    }

    /// `name`'s ad (generation 1, serving `/<name>`), signed by `signer`.
    fn signed_by(name: &str, signer: &str) -> SignedAd {
        let mut ad = fixtures::ad(name, ServerKind::Origin, &[&format!("/{name}")], 999_000, 1);
        ad.expires_at = 1_500_000;
        ad.sign(&fixtures::key_for(signer))
    }

    #[tokio::test]
    async fn a_duplicate_answer_waits_for_the_first_copys_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let replicator = replicator(dir.path(), &["o".to_string()]);
        let (ledger, store) = (replicator.ledger(), replicator.ledger().store());
        let signed = signed_by("o", "o");
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

    #[tokio::test]
    async fn ads_taken_in_together_are_answered_each_and_a_forged_one_alone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..40).map(|i| format!("o{i}")).collect();
        let replicator = replicator(dir.path(), &names);
        // The first ad after an idle moment is taken in at once; the 39 sent right after
        // it wait out the gap together and are checked as one batch.
        let first = replicator.accept(signed_by("o0", "o0"), None).await;
        assert!(matches!(first, Ok(IngestOutcome::Accepted(_))));
        let batch = names[1..].iter().map(|name| {
            // o7's ad signed with o8's key: a bad signature inside the batch.
            let signer = if name == "o7" { "o8" } else { name.as_str() };
            replicator.accept(signed_by(name, signer), None)
        });
        let answers = join_all(batch).await;
        for (name, answer) in names[1..].iter().zip(&answers) {
            if name == "o7" {
                assert!(
                    matches!(answer, Err(IngestError::Untrusted(_))),
                    "{name}: {answer:?}"
                );
            } else {
                assert!(
                    matches!(answer, Ok(IngestOutcome::Accepted(_))),
                    "{name}: {answer:?}"
                );
            }
        }
        let view = replicator.ledger().view();
        assert_eq!(view.len(), 39);
        assert!(!replicator.ledger().store().has_unflushed_writes());
    }

    #[tokio::test]
    async fn an_ad_is_taken_in_even_if_its_request_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        let replicator = replicator(dir.path(), &names);
        replicator.accept(signed_by("a", "a"), None).await.unwrap();
        // `b` arrives within the gap after `a`'s batch, so it waits in the intake; its
        // request gives up (a client that disconnects) while it waits.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(5),
            replicator.accept(signed_by("b", "b"), None),
        )
        .await;
        assert!(gave_up.is_err(), "b was answered within 5 ms: {gave_up:?}");
        let key = crate::ad::AdKey {
            kind: ServerKind::Origin,
            name: "b".into(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while replicator.ledger().view().get(&key).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b was never taken in"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
