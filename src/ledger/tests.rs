//! Ingest and prune tests with a real sled store and a manual clock.

use super::*;
use crate::ad::ServerKind;
use crate::clock::ManualClock;
use crate::fixtures;

const START: u64 = 1_700_000_000_000;

fn limits() -> AdLimits {
    AdLimits {
        max_lifetime: Duration::from_secs(900),
        max_clock_skew: Duration::from_secs(300),
    }
}

fn ledger(dir: &std::path::Path, clock: Arc<ManualClock>) -> Ledger {
    let store = Store::open(dir).unwrap();
    let trust = fixtures::trust(&[("origin-1", ServerKind::Origin, &["/ns"])]);
    Ledger::open(store, trust, clock, limits()).unwrap().0
}

fn signed(generation: u64, started_at: u64) -> SignedAd {
    let key = fixtures::key_for("origin-1");
    fixtures::ad(
        "origin-1",
        ServerKind::Origin,
        &["/ns"],
        started_at,
        generation,
    )
    .sign(&key)
}

#[tokio::test]
async fn newer_replaces_same_is_duplicate_older_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path(), ManualClock::new(START));
    assert_eq!(
        l.ingest(signed(2, START - 1)).await.unwrap().status(),
        "accepted"
    );
    assert_eq!(
        l.ingest(signed(2, START - 1)).await.unwrap().status(),
        "duplicate"
    );
    assert_eq!(
        l.ingest(signed(1, START - 1)).await.unwrap().status(),
        "stale"
    );
    assert_eq!(
        l.ingest(signed(3, START - 1)).await.unwrap().status(),
        "accepted"
    );
    assert_eq!(
        l.ingest(signed(0, START)).await.unwrap().status(),
        "accepted",
        "restart wins"
    );
    assert_eq!(l.view().len(), 1);
}

#[tokio::test]
async fn refusals_leave_the_view_intact() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path(), ManualClock::new(START));
    l.ingest(signed(1, START - 1)).await.unwrap();
    let before = l.view().get(&signed(1, START - 1).ad.key()).cloned();

    let mut tampered = signed(5, START - 1);
    tampered.ad.data_url = "http://evil.example".into();
    assert!(matches!(
        l.ingest(tampered).await,
        Err(IngestError::Untrusted(_))
    ));

    let future = signed(6, START + 3_600_000);
    assert!(matches!(
        l.ingest(future).await,
        Err(IngestError::Invalid(_))
    ));

    let key = fixtures::key_for("origin-1");
    let mut forbidden = fixtures::ad("origin-1", ServerKind::Origin, &["/other"], START - 1, 7);
    forbidden.expires_at = START + 1000;
    assert!(matches!(
        l.ingest(forbidden.sign(&key)).await,
        Err(IngestError::Untrusted(_))
    ));

    let mut far = fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], START - 1, 8);
    far.expires_at = START + 30 * 24 * 3_600_000;
    assert!(matches!(
        l.ingest(far.sign(&key)).await,
        Err(IngestError::Invalid(_))
    ));

    assert_eq!(
        l.view().get(&signed(1, START - 1).ad.key()).cloned(),
        before
    );
}

#[tokio::test]
async fn lifetime_is_clamped_and_prune_removes_from_store_and_view() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let l = ledger(dir.path(), clock.clone());
    let key = fixtures::key_for("origin-1");
    let mut long = fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], START - 1, 1);
    long.expires_at = START + 3 * 3_600_000;
    l.ingest(long.sign(&key)).await.unwrap();
    let held = l.view().ads().next().unwrap().clone();
    assert_eq!(held.expires_at, START + 900_000, "clamped to max_lifetime");

    assert!(l.prune(START + 899_999).await.unwrap().is_empty());
    clock.set(START + 900_000);
    assert_eq!(l.prune(START + 900_000).await.unwrap().len(), 1);
    assert!(l.view().is_empty());
    drop(l);
    let reopened = ledger(dir.path(), clock);
    assert!(reopened.view().is_empty(), "prune reached the store");
}

#[tokio::test]
async fn reopen_restores_the_view() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = ledger(dir.path(), ManualClock::new(START));
        l.ingest(signed(4, START - 1)).await.unwrap();
    }
    let l = ledger(dir.path(), ManualClock::new(START));
    let view = l.view();
    let route = view
        .route("/ns/file", crate::routing::Purpose::Read, START)
        .unwrap();
    assert_eq!(route.candidates[0].name(), "origin-1");
    assert_eq!(
        l.ingest(signed(4, START - 1)).await.unwrap().status(),
        "duplicate"
    );
}

#[tokio::test]
async fn copies_are_recognised_before_their_signature_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path(), ManualClock::new(START));
    let original = signed(2, START - 1);
    l.ingest(original.clone()).await.unwrap();
    // A copy of the held version with a broken signature: answered from the version alone,
    // and the held ad (with its good signature) is untouched.
    let mut forged = original.clone();
    forged.signature = "AAAA".into();
    assert_eq!(
        l.ingest(forged.clone()).await.unwrap().status(),
        "duplicate"
    );
    forged.ad.generation = 1;
    assert_eq!(l.ingest(forged.clone()).await.unwrap().status(), "stale");
    let held = l.view().get(&original.ad.key()).unwrap().clone();
    assert_eq!(held.signature, original.signature);
    // A newer version is still verified, and refused when forged.
    forged.ad.generation = 3;
    assert!(matches!(
        l.ingest(forged).await,
        Err(IngestError::Untrusted(_))
    ));
    assert_eq!(
        l.version_of(&original.ad.key()),
        Some(original.ad.version())
    );
}

#[test]
fn a_batch_refuses_its_forged_ad_alone_and_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..80).map(|i| format!("origin-{i}")).collect();
    let servers: Vec<(&str, ServerKind, &[&str])> = names
        .iter()
        .map(|n| (n.as_str(), ServerKind::Origin, &["/ns"][..]))
        .collect();
    let store = Store::open(dir.path()).unwrap();
    let trust = fixtures::trust(&servers);
    let l = Ledger::open(store, trust, ManualClock::new(START), limits())
        .unwrap()
        .0;
    let ad = |i: usize| {
        fixtures::ad(&names[i], ServerKind::Origin, &["/ns"], START - 1, 1)
            .sign(&fixtures::key_for(&names[i]))
    };
    l.apply(ad(0)).unwrap();
    let mut batch: Vec<SignedAd> = (0..80).map(ad).collect();
    // A copy of what is held is recognised before any signature work: this one's
    // signature is not even well-formed.
    batch[0].signature = "not a signature".into();
    // Tampered after signing: a forgery, among good ads of the same batch.
    batch[40].ad.data_url = "http://evil.example".into();
    // The same ad twice in one batch: the second is a copy of the first.
    batch.push(ad(5));
    let answers = l.apply_many(batch);
    assert_eq!(answers.len(), 81);
    let status = |at: usize| answers[at].as_ref().map(|o| o.status()).ok();
    assert_eq!(status(0), Some("duplicate"));
    assert!(matches!(
        answers[40],
        Err(IngestError::Untrusted(TrustError::Signature(
            crate::ad::SignError::BadSignature
        )))
    ));
    assert_eq!(status(80), Some("duplicate"));
    for at in (1..80).filter(|at| *at != 40) {
        assert_eq!(status(at), Some("accepted"), "ad {at}");
    }
    let view = l.view();
    assert_eq!(view.len(), 79);
    assert!(
        view.get(&ad(40).ad.key()).is_none(),
        "the forgery is not held"
    );
    assert!(l.store().has_unflushed_writes(), "held, not yet durable");
}

/// Enough held ads for more than one sweep chunk, each verified in batches on every core.
const SWEPT: usize = 2_000;

/// What a sweep under [`swept_trust`] decides for `origin-<i>`: `None` keeps it.
fn sweep_verdict(i: usize) -> Option<TrustError> {
    let name = format!("origin-{i}");
    if i % 7 == 0 {
        Some(TrustError::UnknownServer(name))
    } else if i % 11 == 0 {
        Some(TrustError::Signature(crate::ad::SignError::BadSignature))
    } else if i % 13 == 0 {
        Some(TrustError::ForbiddenNamespace {
            name,
            namespace: "/ns".into(),
        })
    } else {
        None
    }
}

/// The trust after a reload: every 7th origin removed, every 11th rekeyed (its held
/// signature no longer verifies), every 13th no longer allowed `/ns`.
fn swept_trust() -> Trust {
    let mut trust = Trust::default();
    for i in (0..SWEPT).filter(|i| i % 7 != 0) {
        let name = format!("origin-{i}");
        let key = match i % 11 {
            0 => fixtures::key_for(&format!("{name}-rekeyed")),
            _ => fixtures::key_for(&name),
        };
        let allowed = if i % 13 == 0 { "/other" } else { "/ns" };
        let server = crate::trust::TrustedServer {
            kind: ServerKind::Origin,
            key: key.verifying_key(),
            namespaces: vec![allowed.into()],
        };
        trust.insert(name, server);
    }
    trust
}

/// A ledger holding `origin-0` .. `origin-<SWEPT>`, stored by an earlier run under a
/// trust that admitted them all (an open checks nothing: the sweep does).
fn ledger_of_many(dir: &std::path::Path) -> Ledger {
    let store = Store::open(dir).unwrap();
    for i in 0..SWEPT {
        let name = format!("origin-{i}");
        let ad = fixtures::ad(&name, ServerKind::Origin, &["/ns"], START - 1, 1);
        let stored = StoredAd::new(ad.sign(&fixtures::key_for(&name)), START, 900_000);
        store.put_ad(&stored).unwrap();
    }
    store.flush_blocking().unwrap();
    Ledger::open(store, Trust::default(), ManualClock::new(START), limits())
        .unwrap()
        .0
}

#[tokio::test]
async fn a_sweep_drops_exactly_the_ads_the_new_trust_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger_of_many(dir.path());
    let mut revoked: Vec<(String, TrustError)> = l
        .set_trust(swept_trust())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key.name, r.reason))
        .collect();
    revoked.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, TrustError)> = (0..SWEPT)
        .filter_map(|i| sweep_verdict(i).map(|reason| (format!("origin-{i}"), reason)))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(revoked, expected);
    assert!(
        l.trust().get("origin-0").is_none(),
        "the new trust is in force"
    );
    let view = l.view();
    assert_eq!(view.len(), SWEPT - expected.len());
    for i in 0..SWEPT {
        let key = AdKey {
            kind: ServerKind::Origin,
            name: format!("origin-{i}"),
        };
        assert_eq!(
            view.get(&key).is_some(),
            sweep_verdict(i).is_none(),
            "{key}"
        );
    }
    drop(l);
    let reopened = ledger(dir.path(), ManualClock::new(START));
    assert_eq!(reopened.view().len(), view.len(), "the store followed");
}

#[tokio::test]
async fn an_ad_replaced_after_the_check_is_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(dir.path(), ManualClock::new(START));
    let mut trust = fixtures::trust(&[
        ("origin-1", ServerKind::Origin, &["/ns"]),
        ("origin-2", ServerKind::Origin, &["/ns"]),
    ]);
    l.set_trust(trust.clone()).await.unwrap();
    let older = |name: &str| {
        fixtures::ad(name, ServerKind::Origin, &["/ns"], START - 1, 1)
            .sign(&fixtures::key_for(name))
    };
    l.ingest(older("origin-1")).await.unwrap();
    l.ingest(older("origin-2")).await.unwrap();
    // Checked against a trust that rekeyed both: both held versions are refused...
    for name in ["origin-1", "origin-2"] {
        let mut server = trust.get(name).unwrap().clone();
        server.key = fixtures::key_for("someone else").verifying_key();
        trust.insert(name, server);
    }
    let refused = sweep::refused(&l.view(), &trust, sweep::Scope::All);
    assert_eq!(refused.len(), 2);
    // ... but origin-1 sends a newer version, checked as it is held, before the drop.
    let newer = signed(2, START - 1);
    l.ingest(newer.clone()).await.unwrap();
    let revoked = l.drop_refused(refused).unwrap();
    let names: Vec<&str> = revoked.iter().map(|r| r.key.name.as_str()).collect();
    assert_eq!(names, ["origin-2"]);
    l.store().flush().await.unwrap();
    drop(l);
    let reopened = ledger(dir.path(), ManualClock::new(START));
    assert_eq!(
        reopened.version_of(&newer.ad.key()),
        Some(newer.ad.version()),
        "the newer version is still held, in the store too"
    );
    assert!(reopened.version_of(&older("origin-2").ad.key()).is_none());
}

/// An ad with a signature no key made, written straight to the store (as no ingest
/// would): only a sweep that verifies signed ads drops it.
fn forged(name: &str) -> StoredAd {
    let ad = fixtures::ad(name, ServerKind::Origin, &["/ns"], START - 1, 1);
    let mut signed = ad.sign(&fixtures::key_for("someone else"));
    signed.ad.name = name.to_string();
    StoredAd::new(signed, START, 900_000)
}

#[tokio::test]
async fn a_start_under_the_signers_of_the_last_sweep_verifies_no_signed_ad_again() {
    let dir = tempfile::tempdir().unwrap();
    let trust = fixtures::trust(&[("origin-1", ServerKind::Origin, &["/ns"])]);
    {
        let l = ledger(dir.path(), ManualClock::new(START));
        assert!(l.store().swept_signers().unwrap().is_none());
        // The first start's sweep checks everything and records its signers.
        l.revoke_untrusted().await.unwrap();
        assert_eq!(
            l.store().swept_signers().unwrap(),
            Some(trust.signers_fingerprint())
        );
        l.store().put_ad(&forged("origin-1")).unwrap();
        l.store().flush().await.unwrap();
    }
    // A start under the same signers does not verify signed ads again: the forged one
    // (which only a write to the store itself could have put there) stays.
    let l = ledger(dir.path(), ManualClock::new(START));
    assert!(l.revoke_untrusted().await.unwrap().is_empty());
    assert_eq!(l.view().len(), 1);
    // A new trust (another signer added) is a new fingerprint: everything is checked.
    let wider = fixtures::trust(&[
        ("origin-1", ServerKind::Origin, &["/ns"]),
        ("origin-2", ServerKind::Origin, &["/ns"]),
    ]);
    assert_ne!(wider.signers_fingerprint(), trust.signers_fingerprint());
    let revoked = l.set_trust(wider.clone()).await.unwrap();
    assert_eq!(revoked.len(), 1, "the forged ad is dropped");
    assert_eq!(
        l.store().swept_signers().unwrap(),
        Some(wider.signers_fingerprint())
    );
}

#[tokio::test]
async fn a_start_whose_trust_changed_while_stopped_verifies_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = ledger(dir.path(), ManualClock::new(START));
        l.revoke_untrusted().await.unwrap();
        l.store().put_ad(&forged("origin-1")).unwrap();
        l.store().flush().await.unwrap();
    }
    // Reopened with origin-1 rekeyed: the record is of other signers.
    let store = Store::open(dir.path()).unwrap();
    let mut trust = fixtures::trust(&[("origin-1", ServerKind::Origin, &["/ns"])]);
    let mut server = trust.get("origin-1").unwrap().clone();
    server.key = fixtures::key_for("origin-1 rekeyed").verifying_key();
    trust.insert("origin-1", server);
    let l = Ledger::open(store, trust, ManualClock::new(START), limits())
        .unwrap()
        .0;
    assert_eq!(l.revoke_untrusted().await.unwrap().len(), 1);
    assert!(l.view().is_empty());
}
