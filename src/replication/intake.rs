//! Ads from services taken in together: those arriving within one gap of each other are
//! checked in one Ed25519 batch and routed in one new view.
//!
//! At scale a director takes in a steady trickle of registrations (167 a second at
//! 10,000 servers a minute), each a newer version that must be verified. One by one,
//! each costs a full signature check and a copy of the view's map path; together, a
//! batch check costs about half per signature and the copies are shared. The wait is
//! bounded by the gap and hidden by the group commit that follows: an ad was already
//! acknowledged only after the next commit, which starts at most a gap after the last.
//! After an idle moment an ad is taken in at once, so a quiet federation waits for
//! nothing.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Replicator;
use crate::ad::SignedAd;
use crate::ledger::{IngestError, IngestOutcome};
use crate::store::StoreError;

/// Least time between the starts of two batches (the group commit's gap, so that one
/// batch feeds one commit).
const GAP: Duration = crate::store::MIN_COMMIT_GAP;
/// Most ads in one batch; more waiting start the next batch at once.
const MOST: usize = 256;

/// An ad waiting to be taken in, and where its answer goes.
struct Submission {
    ad: SignedAd,
    from: Option<String>,
    answer: oneshot::Sender<Result<IngestOutcome, IngestError>>,
}

/// The way into the intake worker (see [`run`]).
pub(super) struct Intake {
    submissions: mpsc::UnboundedSender<Submission>,
    /// The store's directory, named in the error a refused submission gets.
    store: PathBuf,
}

impl Intake {
    /// Starts the worker for `replicator`. It holds only a weak reference and ends when
    /// the replicator (and so this intake) is dropped. It is not tied to the director's
    /// cancellation: requests still draining at shutdown are answered.
    pub(super) fn start(replicator: Weak<Replicator>, store: PathBuf) -> Self {
        let (submissions, received) = mpsc::unbounded_channel();
        tokio::spawn(run(replicator, received));
        Self { submissions, store }
    }

    /// Takes in `ad` (from `from`, a peer, or `None`) with the ads arriving around it and
    /// answers what became of it. Not yet durable: the caller flushes.
    ///
    /// The number of ads waiting is bounded by the requests waiting: each waits here
    /// under its ingest budget.
    pub(super) async fn take_in(
        &self,
        ad: SignedAd,
        from: Option<&str>,
    ) -> Result<IngestOutcome, IngestError> {
        let (answer, answered) = oneshot::channel();
        let submission = Submission {
            ad,
            from: from.map(str::to_string),
            answer,
        };
        if self.submissions.send(submission).is_err() {
            return Err(not_taken_in(&self.store, "the director is stopping"));
        }
        // Once sent, the ad is taken in (and offered to peers) even if this request is
        // dropped meanwhile: the worker owns it.
        answered
            .await
            .unwrap_or_else(|_| Err(not_taken_in(&self.store, "the director is stopping")))
    }
}

/// The answer to an ad that was not taken in (nothing was stored).
pub(super) fn not_taken_in(store: &std::path::Path, why: &str) -> IngestError {
    IngestError::Store(StoreError::Database {
        path: store.to_path_buf(),
        message: format!("{why}: the ad was not taken in"),
    })
}

/// Collects submissions into batches, at most one batch start per [`GAP`], and takes
/// each batch in.
async fn run(replicator: Weak<Replicator>, mut received: mpsc::UnboundedReceiver<Submission>) {
    let mut last_start: Option<Instant> = None;
    while let Some(first) = received.recv().await {
        let mut batch = vec![first];
        if let Some(last) = last_start {
            let gap = tokio::time::sleep_until(last + GAP);
            tokio::pin!(gap);
            while batch.len() < MOST {
                tokio::select! {
                    biased;
                    _ = gap.as_mut() => break,
                    next = received.recv() => match next {
                        Some(next) => batch.push(next),
                        None => break,
                    },
                }
            }
        }
        while batch.len() < MOST {
            match received.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        last_start = Some(Instant::now());
        let Some(replicator) = replicator.upgrade() else {
            return;
        };
        replicator.take_in_batch(batch).await;
    }
}

impl Replicator {
    /// Takes `batch` in together and answers each submission.
    async fn take_in_batch(self: &std::sync::Arc<Self>, batch: Vec<Submission>) {
        let (ads, waiting): (Vec<SignedAd>, Vec<(Option<String>, _)>) = batch
            .into_iter()
            .map(|s| (s.ad, (s.from, s.answer)))
            .unzip();
        let sources: Vec<Option<&str>> = waiting.iter().map(|(from, _)| from.as_deref()).collect();
        let results = self.apply_together(ads, &sources).await;
        for (result, (_, answer)) in results.into_iter().zip(waiting) {
            let _ = answer.send(result);
        }
    }
}
