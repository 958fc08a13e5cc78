//! Holding checked ads: stored and routed under the writer lock, one new view per batch.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{AdLimits, IngestError, IngestOutcome, Ledger, not_newer};
use crate::ad::SignedAd;
use crate::ad::StoredAd;
use crate::clock::UnixMillis;
use crate::routing::View;
use crate::trust::Trust;

/// The writer's turn: ads whose signatures verified are put one by one into the next
/// view, which readers see only at [`Hold::publish`] (routing never waits for this).
pub(super) struct Hold<'a> {
    ledger: &'a Ledger,
    _writer: MutexGuard<'a, ()>,
    /// The trust the ads were checked with.
    checked_with: Arc<Trust>,
    next: View,
    changed: bool,
    /// Ads put into `next`.
    accepted: usize,
    earliest_expiry: UnixMillis,
    now: UnixMillis,
    limits: AdLimits,
}

impl<'a> Hold<'a> {
    /// Takes the writer lock and starts the next view from the current one.
    pub(super) fn start(
        ledger: &'a Ledger,
        checked_with: Arc<Trust>,
        now: UnixMillis,
        limits: AdLimits,
    ) -> Self {
        let writer = ledger.writer.lock().unwrap_or_else(|e| e.into_inner());
        let next = (*ledger.view.load_full()).clone();
        Self {
            ledger,
            _writer: writer,
            checked_with,
            next,
            changed: false,
            accepted: 0,
            earliest_expiry: UnixMillis::MAX,
            now,
            limits,
        }
    }

    /// Stores and indexes `signed` (its signature verified against `checked_with`) if it
    /// is still newer than what the next view holds.
    pub(super) fn put(&mut self, signed: SignedAd) -> Result<IngestOutcome, IngestError> {
        // A reload swapped the trust while this ad was being checked: check again under
        // the lock, so a revoked signer never lands after the reload's sweep.
        let trust = self.ledger.trust.load();
        if !Arc::ptr_eq(&trust, &self.checked_with) {
            trust.check(&signed)?;
        }
        let key = signed.ad.key();
        let before = self.next.get(&key);
        let before_status = before.map(|a| a.ad.status);
        if let Some(known) = not_newer(signed.ad.version(), before.map(|a| a.ad.version())) {
            return Ok(known);
        }
        // A record lives until its own expiry (a downtime's end, a ban's lifting): an
        // operator signs it once, nobody re-sends it every minute.
        let lifetime = if signed.ad.kind.is_record() {
            u64::MAX
        } else {
            self.limits.max_lifetime.as_millis() as u64
        };
        let stored = Arc::new(StoredAd::new(signed, self.now, lifetime));
        self.ledger.store.put_ad(&stored)?;
        self.next.insert(stored.clone());
        self.changed = true;
        self.accepted += 1;
        self.earliest_expiry = self.earliest_expiry.min(stored.expires_at);
        self.ledger
            .events
            .accepted(&stored.ad, before_status, self.now);
        Ok(IngestOutcome::Accepted(stored))
    }

    /// Publishes the next view (if anything changed), releases the lock, and wakes the
    /// expiry worker if an ad expires before its next planned wake.
    pub(super) fn publish(self) {
        let Hold {
            ledger,
            _writer,
            next,
            changed,
            accepted,
            earliest_expiry,
            ..
        } = self;
        // The previous view is let go after the lock: freeing what only it held (the
        // map nodes this hold copied) is no reason for the next writer to wait.
        let previous = changed.then(|| ledger.view.swap(Arc::new(next)));
        drop(_writer);
        let_go(previous, accepted);
        if earliest_expiry < ledger.next_wake.load(Ordering::SeqCst) {
            ledger.expiry_changed.notify_one();
        }
    }
}

/// Holds of at least this many ads free the view they replace on another thread.
const LARGE_HOLD: usize = 1024;

/// Frees `previous` (the view a hold of `accepted` ads replaced). A large hold (a
/// catch-up page) copied most of the view's map nodes, and freeing the old ones costs
/// about a tenth of a refill's CPU: that is done on the runtime's blocking pool, beside
/// the next page's checks, rather than before them. Small holds free theirs at once.
fn let_go(previous: Option<Arc<View>>, accepted: usize) {
    if accepted >= LARGE_HOLD {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(previous));
            return;
        }
    }
    drop(previous);
}
