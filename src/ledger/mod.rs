//! The director's view of the federation: checks, stores and indexes every ad.
//!
//! One writer at a time decides "newer?", writes sled and publishes a new [`View`]
//! snapshot; readers never wait for it. An ad is acknowledged only once durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::ad::StoredAd;
use crate::ad::{AdKey, AdVersion, ServerKind, SignError, SignatureCheck, SignedAd, is_newer};
use crate::clock::{SharedClock, UnixMillis};
use crate::paths::is_valid_namespace;
use crate::routing::View;
use crate::store::{LoadReport, Store, StoreError};
use crate::trust::{Pending, Trust, TrustError};

use hold::Hold;

/// An ad whose expiry lies further ahead than this is refused outright (a broken clock
/// must not make one ad live, or "newest", for ever); nearer ones are clamped.
pub const MAX_EXPIRY_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest server name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Most namespaces in one ad.
pub const MAX_NAMESPACES: usize = 10_000;

/// Limits applied to incoming ads.
#[derive(Debug, Clone, Copy)]
pub struct AdLimits {
    /// An ad expires at min(its expiry, receipt + this).
    pub max_lifetime: Duration,
    /// How far ahead of this director's clock a start time may be.
    pub max_clock_skew: Duration,
}

/// What happened to an ad.
#[derive(Debug, Clone)]
pub enum IngestOutcome {
    /// Newer than what was held: stored, durable and routed.
    Accepted(Arc<StoredAd>),
    /// The same version was already held.
    Duplicate,
    /// An older version than the one held.
    Stale,
}

impl IngestOutcome {
    /// The wire status: `accepted`, `duplicate` or `stale`.
    pub fn status(&self) -> &'static str {
        match self {
            IngestOutcome::Accepted(_) => "accepted",
            IngestOutcome::Duplicate => "duplicate",
            IngestOutcome::Stale => "stale",
        }
    }
}

/// A held ad that a new trust no longer admits.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The ad's key.
    pub key: AdKey,
    /// Why the trust refuses it now.
    pub reason: TrustError,
}

/// Why an ad was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not trusted (unknown signer, bad signature, forbidden namespace).
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    /// Well-signed but not sane (bad URL, clock far off, expired, ...).
    #[error("{0}")]
    Invalid(String),
    /// The store failed: nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The director's ads: durable in sled, indexed in memory.
pub struct Ledger {
    store: Store,
    view: ArcSwap<View>,
    writer: Mutex<()>,
    /// Held by a trust sweep from start to end (see [`Ledger::revoke_untrusted`]).
    sweeping: tokio::sync::Mutex<()>,
    /// Swapped whole by a reload; ingest reads it without waiting.
    trust: ArcSwap<Trust>,
    clock: SharedClock,
    limits: ArcSwap<AdLimits>,
    expiry_changed: Notify,
    /// When the expiry worker next wakes (Unix ms); an ad expiring earlier wakes it.
    next_wake: AtomicU64,
    /// Damage found at open, and whether a peer has refilled the store since.
    recovery: Recovery,
    /// Joins, withdrawals, expiries and refusals, one line each (rate limited).
    events: events::ServerLog,
}

impl Ledger {
    /// Loads every stored ad into a fresh view.
    pub fn open(
        store: Store,
        trust: Trust,
        clock: SharedClock,
        limits: AdLimits,
    ) -> Result<(Self, usize), StoreError> {
        let (view, report) = load_view(&store)?;
        if let Some(what) = report.mismatch {
            store.replace_damaged(clock.now_ms(), what, view.ads().map(|a| a.as_ref()))?;
        }
        let quarantined = report.quarantined.len();
        Ok((
            Self {
                store,
                view: ArcSwap::from_pointee(view),
                writer: Mutex::new(()),
                sweeping: tokio::sync::Mutex::new(()),
                trust: ArcSwap::from_pointee(trust),
                clock,
                limits: ArcSwap::from_pointee(limits),
                expiry_changed: Notify::new(),
                next_wake: AtomicU64::new(0),
                recovery: Recovery::default(),
                events: events::ServerLog::default(),
            },
            quarantined,
        ))
    }

    /// The current snapshot (lock-free).
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// The current snapshot without touching its reference count (every redirect reads
    /// it, from every worker thread): hold it briefly, never across an `.await`.
    pub fn view_guard(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Damage found at open and the refill that follows.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The recovery from damage has ended ([`Recovery::sync_succeeded`] or
    /// [`Recovery::renewed`] said so): the store's record of the damage goes, off the
    /// runtime's threads.
    pub async fn forget_damage(&self) {
        let store = self.store.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store.refilled()).await {
            tracing::error!(%error, "cannot clear the store's record of its damage; the next start recovers again");
        }
    }

    /// Ends the recovery from damage once `wait` has passed (the rest of
    /// `ads.max_lifetime` since the damage: see [`Recovery::renewed`]), unless `cancel`.
    pub async fn renew_after(
        self: Arc<Self>,
        wait: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(wait) => {
                if self.recovery.renewed() {
                    self.forget_damage().await;
                }
            }
        }
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Woken when an ad arrives that expires before the worker's next planned wake.
    pub fn expiry_changed(&self) -> &Notify {
        &self.expiry_changed
    }

    /// Records when the expiry worker plans to wake next.
    pub fn set_next_wake(&self, at: UnixMillis) {
        self.next_wake.store(at, Ordering::SeqCst);
    }

    /// The trust in force.
    pub fn trust(&self) -> Arc<Trust> {
        self.trust.load_full()
    }

    /// The limits in force.
    pub fn limits(&self) -> AdLimits {
        **self.limits.load()
    }

    /// Replaces the limits applied to ads received from now on.
    pub fn set_limits(&self, limits: AdLimits) {
        self.limits.store(Arc::new(limits));
    }

    /// Puts `trust` in force and drops every held ad it no longer admits (see
    /// [`Ledger::revoke_untrusted`]). The swap happens under the writer lock, so no ad
    /// checked against the old trust can slip in after the sweep.
    pub async fn set_trust(&self, trust: Trust) -> Result<Vec<Revoked>, StoreError> {
        self.sweep(Some(trust)).await
    }

    /// Drops every held ad that the trust in force no longer admits (its signer gone or
    /// rekeyed, its kind changed, a namespace no longer allowed): from routing at once,
    /// then from the store. Run at every start and every reload. The signatures are
    /// verified in batches, off the async runtime and without holding up ingest.
    pub async fn revoke_untrusted(&self) -> Result<Vec<Revoked>, StoreError> {
        self.sweep(None).await
    }

    /// The version held for `key`.
    pub fn version_of(&self, key: &AdKey) -> Option<AdVersion> {
        self.view.load().get(key).map(|a| a.ad.version())
    }

    /// Fetches what checking `signed` needs from the network (a Pelican ad's registry
    /// keys), so that [`Ledger::apply`] never waits on it.
    pub async fn prepare(&self, signed: &SignedAd) {
        let trust = self.trust.load_full();
        trust.prepare(signed).await;
    }

    /// Checks, stores (durably) and indexes `signed` if it is newer than what is held.
    pub async fn ingest(&self, signed: SignedAd) -> Result<IngestOutcome, IngestError> {
        let outcome = self.apply(signed)?;
        if matches!(outcome, IngestOutcome::Accepted(_)) {
            self.store.flush().await?;
        }
        Ok(outcome)
    }

    /// Like [`Ledger::ingest`] but returns before the write is durable: the ad is already
    /// routed. The caller must `store().flush()` before acknowledging it to anyone.
    pub fn apply(&self, signed: SignedAd) -> Result<IngestOutcome, IngestError> {
        let now = self.clock.now_ms();
        self.store.note_time(now);
        let limits = self.limits();
        let checked_with = self.trust.load_full();
        let plan = match self.screen(&signed, now, &limits, &checked_with)? {
            Screened::Known(known) => return Ok(known),
            Screened::Pending(plan) => *plan,
        };
        let verified = plan.signature.verify();
        self.verdict(&signed, plan, verified, now)?;
        let mut hold = Hold::start(self, checked_with, now, limits);
        let answer = hold.put(signed);
        hold.publish();
        answer
    }

    /// [`Ledger::apply`] for many ads at once (a catch-up page): the signatures of those
    /// not already held are verified together, on every core and in Ed25519 batches
    /// ([`SignatureCheck::verify_many`]); a bad one is refused alone. The newer ads are
    /// then stored and routed in one new view. One answer per ad, in order. Blocks
    /// while verifying: call it off the async runtime.
    pub fn apply_many(&self, batch: Vec<SignedAd>) -> Vec<Result<IngestOutcome, IngestError>> {
        let now = self.clock.now_ms();
        self.store.note_time(now);
        let limits = self.limits();
        let checked_with = self.trust.load_full();
        // Each ad is either answered (Ok) or still owed an answer (Err) at every step.
        let screened: Vec<Result<Answer, Box<(SignedAd, Pending)>>> = batch
            .into_iter()
            .map(
                |signed| match self.screen(&signed, now, &limits, &checked_with) {
                    Ok(Screened::Known(known)) => Ok(Ok(known)),
                    Ok(Screened::Pending(plan)) => Err(Box::new((signed, *plan))),
                    Err(refused) => Ok(Err(refused)),
                },
            )
            .collect();
        let checks: Vec<&SignatureCheck> = screened
            .iter()
            .filter_map(|step| step.as_ref().err().map(|pending| &pending.1.signature))
            .collect();
        let mut verified = SignatureCheck::verify_many(&checks).into_iter();
        let checked: Vec<Result<Answer, Box<SignedAd>>> = screened
            .into_iter()
            .map(|step| {
                let (signed, plan) = match step {
                    Ok(answer) => return Ok(answer),
                    Err(pending) => *pending,
                };
                // One outcome per check; a missing one fails closed.
                let outcome = verified.next().unwrap_or(Err(SignError::BadSignature));
                match self.verdict(&signed, plan, outcome, now) {
                    Ok(()) => Err(Box::new(signed)),
                    Err(refused) => Ok(Err(refused)),
                }
            })
            .collect();
        if checked.iter().all(Result::is_ok) {
            return checked.into_iter().flatten().collect();
        }
        let mut hold = Hold::start(self, checked_with, now, limits);
        let answers = checked
            .into_iter()
            .map(|step| step.unwrap_or_else(|signed| hold.put(*signed)))
            .collect();
        hold.publish();
        answers
    }

    /// Everything before the signature: a copy that is not newer is recognised before any
    /// signature work (most ads a director receives are copies of what it holds: every
    /// service reaches every director, and peers forward too; answering "duplicate" or
    /// "stale" to a forged copy changes nothing and tells nothing a digest does not),
    /// then sanity, then what the trust decides short of the signature.
    fn screen(
        &self,
        signed: &SignedAd,
        now: UnixMillis,
        limits: &AdLimits,
        trust: &Trust,
    ) -> Result<Screened, IngestError> {
        if let Some(known) = self.not_newer(&signed.ad.key(), signed.ad.version()) {
            return Ok(Screened::Known(known));
        }
        match self
            .check_sane(signed, now, limits)
            .and_then(|()| Ok(trust.plan(signed)?))
        {
            Ok(plan) => Ok(Screened::Pending(Box::new(plan))),
            Err(refused) => {
                self.events.refused(&signed.ad, &refused, now);
                Err(refused)
            }
        }
    }

    /// The trust's verdict on `signed` once its signature check came out as `verified`.
    fn verdict(
        &self,
        signed: &SignedAd,
        plan: Pending,
        verified: Result<(), SignError>,
        now: UnixMillis,
    ) -> Result<(), IngestError> {
        plan.verdict(verified).map_err(|refused| {
            let refused = IngestError::from(refused);
            self.events.refused(&signed.ad, &refused, now);
            refused
        })
    }

    /// `Some(Duplicate | Stale)` if `version` is not newer than the version held for `key`.
    fn not_newer(&self, key: &AdKey, version: AdVersion) -> Option<IngestOutcome> {
        not_newer(version, self.version_of(key))
    }

    fn check_sane(
        &self,
        signed: &SignedAd,
        now: UnixMillis,
        limits: &AdLimits,
    ) -> Result<(), IngestError> {
        let ad = &signed.ad;
        let invalid = |why: String| Err(IngestError::Invalid(why));
        if ad.name.trim().is_empty() || ad.name.len() > MAX_NAME_LEN {
            return invalid(format!("name must be 1 to {MAX_NAME_LEN} characters"));
        }
        let skew = limits.max_clock_skew.as_millis() as u64;
        if ad.kind.is_record() {
            return sanity::record(ad, now, skew).map_err(IngestError::Invalid);
        }
        if ad.record.is_some() {
            return invalid("only downtime and ban records carry a record".into());
        }
        // The data URL is checked there, with the other URLs.
        if let Err(why) = sanity::check(ad) {
            return invalid(why);
        }
        if ad.kind == ServerKind::Director && !ad.namespaces.is_empty() {
            return invalid("a director ad carries no namespaces".into());
        }
        if ad.namespaces.len() > MAX_NAMESPACES {
            return invalid(format!("more than {MAX_NAMESPACES} namespaces"));
        }
        if let Some(ns) = ad
            .namespaces
            .iter()
            .find(|ns| !is_valid_namespace(&ns.path))
        {
            return invalid(format!(
                "namespace {:?} is not a clean absolute path",
                ns.path
            ));
        }
        if ad.instance_id.started_at > now.saturating_add(skew) {
            return invalid(format!(
                "instance started_at {} is {} ms ahead of this director's clock (limit {skew} ms)",
                ad.instance_id.started_at,
                ad.instance_id.started_at - now
            ));
        }
        if ad.expires_at <= now {
            return invalid(format!("ad expired at {} (now {now})", ad.expires_at));
        }
        if ad.expires_at > now.saturating_add(MAX_EXPIRY_AHEAD.as_millis() as u64) {
            return invalid(format!(
                "expires_at {} is unreasonably far in the future",
                ad.expires_at
            ));
        }
        Ok(())
    }

    /// Drops every ad whose expiry has passed; returns their keys.
    pub async fn prune(&self, now: UnixMillis) -> Result<Vec<AdKey>, StoreError> {
        let expired = {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.view.load_full();
            let expired: Vec<AdKey> = current
                .ads()
                .filter(|a| a.expires_at <= now)
                .map(|a| a.ad.key())
                .collect();
            if expired.is_empty() {
                return Ok(expired);
            }
            let mut next = (*current).clone();
            for key in &expired {
                self.events.expired(key, now);
                self.store.remove_ad(key)?;
                next = next.without(key);
            }
            self.view.store(Arc::new(next));
            expired
        };
        self.store.flush().await?;
        Ok(expired)
    }
}

/// The answer to one ad.
type Answer = Result<IngestOutcome, IngestError>;

/// What [`Ledger::screen`] found: a copy already answered, or a signature still to check.
enum Screened {
    Known(IngestOutcome),
    Pending(Box<Pending>),
}

/// `Some(Duplicate | Stale)` if `version` is not newer than `held`.
fn not_newer(version: AdVersion, held: Option<AdVersion>) -> Option<IngestOutcome> {
    if is_newer(version, held) {
        None
    } else if held == Some(version) {
        Some(IngestOutcome::Duplicate)
    } else {
        Some(IngestOutcome::Stale)
    }
}

/// Ads decoded per hand-over from the scanning thread to the indexing one.
const LOAD_BATCH: usize = 512;

/// Scans the store and builds the view at once: this thread decodes while another
/// indexes, so a restart costs about the longer of the two rather than their sum.
fn load_view(store: &Store) -> Result<(View, LoadReport), StoreError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<StoredAd>>(16);
        let builder = scope.spawn(move || View::from_ads(rx.into_iter().flatten()));
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        let scanned = store.load_ads_with(|ad| {
            batch.push(ad);
            if batch.len() == LOAD_BATCH {
                // The builder only stops early by panicking, which join() re-raises.
                let _ = tx.send(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(LOAD_BATCH),
                ));
            }
        });
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let view = builder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((view, scanned?))
    })
}

mod events;
mod hold;
mod recovery;
mod sanity;
mod sweep;
pub use recovery::{Recovery, StoreState};
#[cfg(test)]
mod tests;
