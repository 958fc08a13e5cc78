//! Re-checking held ads against the trust in force: signatures verified in batches off
//! the writer lock, then only the ads refused dropped under it.

use std::sync::Arc;

use super::{Ledger, Revoked};
use crate::ad::{AdKey, AdVersion, SignError, SignatureCheck, StoredAd};
use crate::routing::View;
use crate::store::StoreError;
use crate::trust::{Trust, TrustError};

/// Held ads planned and verified together: enough for full batches on every core, few
/// enough that their signed bytes (a copy of each ad) stay small beside the view.
const CHUNK: usize = 1024;

/// A held ad that the trust refused, at the version it refused.
#[derive(Debug)]
pub(super) struct Refused {
    key: AdKey,
    version: AdVersion,
    reason: TrustError,
}

impl Ledger {
    /// Puts `replace` (if any) in force, checks every held ad against the trust in force
    /// without holding the writer lock, then drops those it refuses.
    ///
    /// Verifying every held signature costs about 35 µs of CPU an ad (seconds for a
    /// 100,000-ad view), so the store records the signers' fingerprint of the trust a
    /// sweep completed under. A later sweep without a new trust (the one at start) under
    /// the same fingerprint checks only attested ads, whose admission also depends on
    /// keys outside the trust file: every signed ad held was admitted by exactly these
    /// signers. A new trust first forgets the record, so a sweep cut short (a crash
    /// before it ended) leaves none and the next start checks everything.
    pub(super) async fn sweep(&self, replace: Option<Trust>) -> Result<Vec<Revoked>, StoreError> {
        // One sweep at a time: an earlier trust's sweep must not drop what a later
        // trust, already in force, admits.
        let _one = self.sweeping.lock().await;
        if replace.is_some() {
            self.store.set_swept_signers(None)?;
        }
        let (trust, held) = self.put_in_force(replace);
        let fingerprint = trust.signers_fingerprint();
        let scope = if self.store.swept_signers()? == Some(fingerprint) {
            Scope::Attested
        } else {
            Scope::All
        };
        let refused = match tokio::task::spawn_blocking(move || refused(&held, &trust, scope)).await
        {
            Ok(refused) => refused,
            Err(failed) => match failed.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only when the runtime shuts down first: the next start sweeps again.
                Err(_) => return Ok(Vec::new()),
            },
        };
        let revoked = self.drop_refused(refused)?;
        if !revoked.is_empty() {
            self.store.flush().await?;
        }
        self.store.set_swept_signers(Some(fingerprint))?;
        Ok(revoked)
    }

    /// Installs `replace` (if any) and returns the trust in force with the view to check.
    /// Both under the writer lock: an ad held under the old trust is in that view, and
    /// one held after it is checked by the new trust as it is held (`Hold::put`).
    fn put_in_force(&self, replace: Option<Trust>) -> (Arc<Trust>, Arc<View>) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut trust) = replace {
            // The registry (its cached keys) outlives any one trust file.
            if let Some(registry) = self.trust.load().pelican().registry() {
                trust.pelican_mut().set_registry(registry.clone());
            }
            self.trust.store(Arc::new(trust));
        }
        (self.trust.load_full(), self.view.load_full())
    }

    /// Drops each refused ad that is still held at the version refused (a newer one,
    /// held since, was checked by the trust in force): from routing at once, then from
    /// the store. Returns those dropped.
    pub(super) fn drop_refused(&self, refused: Vec<Refused>) -> Result<Vec<Revoked>, StoreError> {
        if refused.is_empty() {
            return Ok(Vec::new());
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.view.load_full();
        let revoked: Vec<Revoked> = refused
            .into_iter()
            .filter(|r| current.get(&r.key).map(|a| a.ad.version()) == Some(r.version))
            .map(|r| Revoked {
                key: r.key,
                reason: r.reason,
            })
            .collect();
        if revoked.is_empty() {
            return Ok(revoked);
        }
        let mut next = (*current).clone();
        for r in &revoked {
            next = next.without(&r.key);
        }
        // Routing stops first; the store follows (a failure there leaves the ad on
        // disk, where the next start's sweep drops it again).
        self.view.store(Arc::new(next));
        for r in &revoked {
            self.store.remove_ad(&r.key)?;
        }
        Ok(revoked)
    }
}

/// Which held ads a sweep checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every one.
    All,
    /// Only attested (Pelican) ads: the signed ones were checked by the same signers.
    Attested,
}

/// Every ad of `held` in `scope` that `trust` refuses, in the view's order. Blocks while
/// verifying (on every core): call it off the async runtime.
pub(super) fn refused(held: &View, trust: &Trust, scope: Scope) -> Vec<Refused> {
    let ads: Vec<&Arc<StoredAd>> = held
        .ads()
        .filter(|a| scope == Scope::All || a.attestation.is_some())
        .collect();
    ads.chunks(CHUNK)
        .flat_map(|chunk| refused_among(chunk, trust))
        .collect()
}

/// [`refused`] for one chunk: everything the trust decides short of the signature, then
/// the signatures left to check verified together.
fn refused_among(ads: &[&Arc<StoredAd>], trust: &Trust) -> Vec<Refused> {
    let planned: Vec<_> = ads.iter().map(|a| (*a, trust.plan(&a.signed()))).collect();
    let checks: Vec<&SignatureCheck> = planned
        .iter()
        .filter_map(|(_, plan)| plan.as_ref().ok().map(|pending| &pending.signature))
        .collect();
    let mut verified = SignatureCheck::verify_many(&checks).into_iter();
    planned
        .into_iter()
        .filter_map(|(ad, plan)| {
            let verdict = plan.and_then(|pending| {
                // One outcome per check; a missing one fails closed.
                pending.verdict(verified.next().unwrap_or(Err(SignError::BadSignature)))
            });
            verdict.err().map(|reason| Refused {
                key: ad.ad.key(),
                version: ad.ad.version(),
                reason,
            })
        })
        .collect()
}
