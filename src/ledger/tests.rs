//! Ingest and prune tests with a real sled store and a manual clock.

use super::*;
use crate::ad::ServerKind;
use crate::clock::ManualClock;
use crate::fixtures;

const START: u64 = 1_700_000_000_000;

fn ledger(dir: &std::path::Path, clock: Arc<ManualClock>) -> Ledger {
    let store = Store::open(dir).unwrap();
    let trust = fixtures::trust(&[("origin-1", ServerKind::Origin, &["/ns"])]);
    let limits = AdLimits {
        max_lifetime: Duration::from_secs(900),
        max_clock_skew: Duration::from_secs(300),
    };
    Ledger::open(store, trust, clock, limits).unwrap().0
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
    let route = l
        .view()
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
