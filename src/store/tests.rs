//! Store tests against real sled directories.

use super::*;
use crate::ad::ServerKind;
use crate::fixtures;

fn stored(name: &str, generation: u64) -> StoredAd {
    let ad = fixtures::ad(name, ServerKind::Origin, &["/ns"], 1_000, generation);
    StoredAd::new(ad.sign(&fixtures::key_for(name)), 2_000, 900_000)
}

#[tokio::test]
async fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_ad(&stored("origin-1", 1)).unwrap();
        store.put_ad(&stored("origin-2", 1)).unwrap();
        store.put_ad(&stored("origin-1", 2)).unwrap();
        store.remove_ad(&stored("origin-2", 1).ad.key()).unwrap();
        store.put_peer("http://d:1", b"peer bytes").unwrap();
        store.set_last_started_at(42).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load_ads().unwrap();
    assert_eq!(loaded.ads, vec![stored("origin-1", 2)]);
    assert!(loaded.quarantined.is_empty());
    assert_eq!(
        store.load_peers().unwrap(),
        vec![("http://d:1".to_string(), b"peer bytes".to_vec())]
    );
    assert_eq!(store.last_started_at().unwrap(), Some(42));
    assert_eq!(
        store.get_ad(&stored("origin-1", 2).ad.key()).unwrap(),
        Some(stored("origin-1", 2))
    );
}

#[tokio::test]
async fn a_damaged_value_is_quarantined_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let good = stored("origin-1", 1);
    let bad = stored("origin-2", 1);
    store.put_ad(&good).unwrap();
    store.flush().await.unwrap();
    let mut bytes = bad.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    store.overwrite_raw_ad(&bad.ad.key(), &bytes).unwrap();
    assert!(matches!(
        store.get_ad(&bad.ad.key()),
        Err(StoreError::Corrupt { .. })
    ));
    let loaded = store.load_ads().unwrap();
    assert_eq!(loaded.ads, vec![good]);
    assert_eq!(loaded.quarantined, vec![bad.ad.key().to_string()]);
    assert_eq!(
        store.load_ads().unwrap().quarantined.len(),
        0,
        "moved aside once"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &99u32.to_le_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::FutureSchema { found: 99, .. })
    ));
}

#[test]
fn an_unopenable_store_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("conf"), b"\xff\xfe not a sled config").unwrap();
    std::fs::write(data.join("db"), vec![0xa5; 4096]).unwrap();
    let (store, aside) = Store::open_or_recover(&data, 7).unwrap();
    let damage = aside.expect("moved aside");
    assert!(damage.moved_to.exists());
    assert!(store.load_ads().unwrap().ads.is_empty());
}

/// The committed fixture of schema 1 (see `migrations/`) must keep opening.
#[test]
fn the_committed_schema_1_fixture_opens() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-1");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load_ads().unwrap();
    assert_eq!(loaded.ads.len(), 2);
    assert!(loaded.quarantined.is_empty());
    assert_eq!(store.last_started_at().unwrap(), Some(1_700_000_000_000));
    // Migrated 1 -> 2: the same ads, and their signatures (made before `record`
    // existed) still verify.
    let mut ads = loaded.ads;
    ads.sort_by(|a, b| a.ad.name.cmp(&b.ad.name));
    assert_eq!(ads, vec![stored("cache-1", 1), stored("origin-1", 3)]);
    for ad in &ads {
        let key = fixtures::key_for(&ad.ad.name).verifying_key();
        ad.signed().verify(&key).unwrap();
    }
    drop(store);
    // Migrated to the current schema with a first manifest; reopens as sound.
    assert!(dir.path().join(MANIFEST_FILE).exists());
    let (store, damage) = Store::open_or_recover(dir.path(), 1).unwrap();
    assert_eq!(damage, None);
    assert_eq!(store.load_ads().unwrap().ads.len(), 2);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Writes the schema-1 fixture: `cargo test --lib write_schema_1_fixture -- --ignored`.
#[test]
#[ignore = "writes the committed fixture; run by hand when adding a schema version"]
fn write_schema_1_fixture() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-1");
    let _ = std::fs::remove_dir_all(&fixture);
    let store = Store::open(&fixture).unwrap();
    store.put_ad(&stored("origin-1", 3)).unwrap();
    store.put_ad(&stored("cache-1", 1)).unwrap();
    store.set_last_started_at(1_700_000_000_000).unwrap();
    store.flush_blocking().unwrap();
}

#[test]
fn a_locked_store_is_an_error_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let held = Store::open(dir.path()).unwrap();
    held.put_ad(&stored("origin-1", 1)).unwrap();
    held.flush_blocking().unwrap();
    match Store::open_or_recover(dir.path(), 9) {
        Err(StoreError::Database { .. }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok((_, aside)) => panic!("opened a store another handle holds (moved aside: {aside:?})"),
    }
    assert_eq!(held.load_ads().unwrap().ads.len(), 1);
}

/// A store of `n` ads written in commits of 50, then closed.
fn filled(dir: &std::path::Path, n: usize) {
    let store = Store::open(dir).unwrap();
    for i in 0..n {
        store.put_ad(&stored(&format!("origin-{i}"), 1)).unwrap();
        if i % 50 == 49 {
            store.flush_blocking().unwrap();
        }
    }
    store.flush_blocking().unwrap();
}

/// Damages a data directory in one way.
type Damager = fn(&std::path::Path);

/// Ways the fault injector damaged a stopped director's store.
fn damage_modes() -> Vec<(&'static str, Damager)> {
    fn db(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("db")
    }
    fn set_len(dir: &std::path::Path, len: impl Fn(u64) -> u64) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(db(dir))
            .unwrap();
        let old = file.metadata().unwrap().len();
        file.set_len(len(old)).unwrap();
    }
    vec![
        ("db truncated to half", |d| set_len(d, |n| n / 2)),
        ("db truncated to zero", |d| set_len(d, |_| 0)),
        ("db deleted", |d| std::fs::remove_file(db(d)).unwrap()),
        ("db cut by 100 bytes", |d| set_len(d, |n| n - 100)),
        ("4 KiB of garbage in the middle of db", |d| {
            use std::io::{Seek, SeekFrom, Write};
            let mut file = std::fs::OpenOptions::new().write(true).open(db(d)).unwrap();
            let middle = file.metadata().unwrap().len() / 2;
            file.seek(SeekFrom::Start(middle)).unwrap();
            file.write_all(&[0x5a; 4096]).unwrap();
        }),
        ("garbage in conf", |d| {
            std::fs::write(d.join("conf"), b"segment_size: lots\n\xff\xfe").unwrap()
        }),
        ("garbage snap file", |d| {
            std::fs::write(d.join("snap.00000000002EFFFF"), vec![0xa5; 4096]).unwrap()
        }),
        ("manifest damaged", |d| {
            std::fs::write(d.join(MANIFEST_FILE), b"{\"format\": 1, \"manif").unwrap()
        }),
        ("manifest deleted", |d| {
            std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap()
        }),
        ("db and manifest deleted", |d| {
            std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap();
            std::fs::remove_file(db(d)).unwrap();
        }),
    ]
}

/// Collects the ERROR events logged while `f` runs on this thread.
fn errors_logged<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (out, text.lines().map(str::to_string).collect())
}

/// Every damage mode is found, logged as an ERROR and moved aside; the sound ads that
/// survive are kept (all of them when only the manifest, `conf` or a snapshot is hit).
/// (What a director then serves: `tests/store_faults.rs`.)
#[test]
fn every_damage_mode_is_loud() {
    const ADS: usize = 1000;
    let mut report = Vec::new();
    for (mode, damage) in damage_modes() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        filled(&data, ADS);
        damage(&data);
        let ((store, held), errors) = errors_logged(|| {
            let (store, _) = Store::open_or_recover(&data, 7).unwrap();
            let held = store.load_or_recover(7).unwrap().ads.len();
            (store, held)
        });
        let found = store.damage();
        let found = found.unwrap_or_else(|| panic!("{mode}: not detected"));
        assert!(found.moved_to.exists(), "{mode}: not moved aside");
        assert!(
            errors
                .iter()
                .any(|l| l.contains("ERROR") && l.contains("damaged")),
            "{mode}: no ERROR logged: {errors:?}"
        );
        assert_eq!(held, found.survivors, "{mode}");
        // Where the log itself is whole (only the manifest or sled's configuration and
        // snapshots are damaged), every ad survives.
        let log_whole = mode.starts_with("manifest") || mode.starts_with("garbage");
        if log_whole {
            assert_eq!(held, ADS, "{mode}: ads lost from an intact log");
        }
        report.push(format!("{mode}: {} (kept {held}/{ADS})", found.what));
        drop(store);
        // The refilled store is sound on its next start.
        let (again, early) = Store::open_or_recover(&data, 8).unwrap();
        assert_eq!(early, None, "{mode}: the replacement store is not sound");
        assert_eq!(again.load_ads().unwrap().ads.len(), held, "{mode}");
    }
    for line in report {
        println!("{line}");
    }
}

/// Opens and loads the store in `dir`: how many ads it holds, or why not.
fn loaded(dir: &std::path::Path) -> Result<usize, StoreError> {
    Ok(Store::open(dir)?.load_ads()?.ads.len())
}

/// The crash rule: the tree may hold the manifest's committed state or its pending one
/// (a crash between the manifest's write and sled's flush, or between sled's flush and
/// the confirmation); anything else, such as a manifest two commits behind, is damage.
#[tokio::test]
async fn a_manifest_one_commit_behind_is_accepted_two_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join(MANIFEST_FILE);
    let store = Store::open(dir.path()).unwrap();
    store.put_ad(&stored("origin-1", 1)).unwrap();
    store.flush_blocking().unwrap(); // commit 1, confirmed
    let after_one = std::fs::read(&manifest_path).unwrap();
    store.put_ad(&stored("origin-2", 1)).unwrap();
    store.flush().await.unwrap(); // commit 2, not confirmed: the crash window
    let unconfirmed = std::fs::read(&manifest_path).unwrap();
    drop(store);

    // Crash after sled's flush, before the confirmation: the tree is at "pending".
    assert_eq!(
        loaded(dir.path()).expect("one commit behind is not damage"),
        2
    );

    // A manifest that knows only commit 1 (confirmed) while the tree holds commit 2.
    std::fs::write(&manifest_path, &after_one).unwrap();
    assert!(
        matches!(loaded(dir.path()), Err(StoreError::Damaged { .. })),
        "a tree ahead of a confirmed manifest is damage"
    );

    // A tree one commit behind its unconfirmed manifest (the batch never reached sled).
    let behind = tempfile::tempdir().unwrap();
    let store = Store::open(behind.path()).unwrap();
    store.put_ad(&stored("origin-1", 1)).unwrap();
    store.flush_blocking().unwrap();
    drop(store);
    let copied = tempfile::tempdir().unwrap();
    std::fs::write(copied.path().join(MANIFEST_FILE), &unconfirmed).unwrap();
    let m = manifest::read(copied.path()).unwrap().unwrap();
    let manifest = manifest::Manifest {
        generation: 2,
        committed: m.committed,
        pending: m.pending,
        clock_high_water: 0,
    };
    manifest::write(behind.path(), &manifest).unwrap();
    assert_eq!(
        loaded(behind.path()).expect("a batch that never landed is no damage"),
        1
    );

    // Two commits behind: the tree lost a confirmed commit.
    let two = manifest::Manifest {
        generation: 3,
        committed: manifest.pending,
        pending: manifest.pending,
        clock_high_water: 0,
    };
    manifest::write(behind.path(), &two).unwrap();
    assert!(matches!(
        loaded(behind.path()),
        Err(StoreError::Damaged { .. })
    ));
}

/// A snapshot left half-written by a full disk is sled's temporary file, not damage:
/// sled 0.34 would read it as its newest snapshot and fail every open after it.
#[test]
fn an_unfinished_sled_snapshot_is_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 100);
    std::fs::write(dir.path().join("snap.00000000FFFFFFFF.generating"), b"").unwrap();
    let (store, damage) = Store::open_or_recover(dir.path(), 1).unwrap();
    assert_eq!(damage, None);
    assert_eq!(store.load_ads().unwrap().ads.len(), 100);
}

fn attested(name: &str, generation: u64) -> StoredAd {
    use crate::pelican::attest::attest;
    use crate::pelican::{Attestation, KeySource};
    let ad = fixtures::ad(name, ServerKind::Origin, &["/ns"], 1_000, generation);
    let attestation = Attestation {
        director: "director-a".into(),
        verified_at: 1_500,
        key_source: KeySource::Registry,
        registry_prefix: format!("/origins/{name}"),
        issuer: format!("https://{name}"),
        kid: "kid".into(),
        alg: "ES256".into(),
        token_expires_at: 61_000,
        token_sha256: "ab".repeat(32),
        pelican_ad: r#"{"name":"x"}"#.into(),
    };
    StoredAd::new(
        attest(ad, attestation, &fixtures::key_for("director-a")),
        2_000,
        900_000,
    )
}

#[tokio::test]
async fn skein_ads_stay_format_1_and_pelican_ads_are_format_2() {
    let skein = stored("origin-1", 1);
    let pelican = attested("origin-p", 1);
    assert_eq!(skein.encode()[0], codec::VALUE_FORMAT);
    assert_eq!(pelican.encode()[0], codec::ATTESTED_AD_FORMAT);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_ad(&skein).unwrap();
        store.put_ad(&pelican).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut loaded = store.load_ads().unwrap().ads;
    loaded.sort_by_key(|a| a.ad.name.clone());
    assert_eq!(loaded, vec![skein, pelican.clone()]);
    assert_eq!(store.get_ad(&pelican.ad.key()).unwrap(), Some(pelican));
}

/// A downtime record about `origin-1`, signed by the admin key `ops`.
fn record_ad() -> StoredAd {
    let mut ad = crate::ad::Record {
        signer: "ops".into(),
        active: true,
        start: 1_000,
        end: 9_000_000,
        reason: "disk swap".into(),
    }
    .into_ad(ServerKind::Downtime, "origin-1", 1_000, 9_000_000);
    ad.instance_id.uuid = uuid::Uuid::from_u64_pair(7, 7);
    ad.version = "test".into();
    StoredAd::new(ad.sign(&fixtures::key_for("ops")), 2_000, 900_000)
}

/// What the schema-2 fixture holds: a Skein ad (format 1), a downtime record (format 1,
/// with `record`) and a Pelican ad (format 2).
fn schema_2_content() -> Vec<StoredAd> {
    vec![record_ad(), stored("origin-1", 3), attested("origin-p", 2)]
}

/// Writes the schema-2 fixture: `cargo test --lib write_schema_2_fixture -- --ignored`.
/// Written once by the build before ads carried a location; never regenerate it.
#[test]
#[ignore = "writes the committed fixture; run by hand when adding a schema version"]
fn write_schema_2_fixture() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-2");
    let _ = std::fs::remove_dir_all(&fixture);
    let store = Store::open(&fixture).unwrap();
    for ad in schema_2_content() {
        store.put_ad(&ad).unwrap();
    }
    store.set_last_started_at(1_800_000_000_000).unwrap();
    store.flush_blocking().unwrap();
}

/// Signatures made by the build before ads carried a location (Ed25519 is deterministic):
/// the same ads must sign the same bytes.
const SCHEMA_2_SIGNATURES: [&str; 3] = [
    "CcvMIvUDHMHjjustZgkvIvzMYvH4mphbql2ZBPRQ6kkJLOhTRMfFuo8INt_wGooXSWIpLd3goZEiWenuDtMoCg",
    "sjQB3T5vtp0eqCD68zhanF385_U79I3-wHymLTf41Y3wNtdZuKzS8PgWInwNgbtQAUZwmzjuTi751wPDIxL1Bg",
    "nNe-0N74UXQDxd_VEpIRVxDbRY4Y1Rbf9s-DXmZG6R3WIqxPoqe0fYdeCGD4Mns4oEIgLf8vLZKb7NdjYvehBg",
];

/// A store written before ads carried a location (schema 2: a record and a Skein ad in
/// format 1, a Pelican ad in format 2) opens as it is: the same ads, signed as they were,
/// every signature verifying, and the store sound on reopening.
#[test]
fn the_committed_schema_2_fixture_opens() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-2");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let (store, damage) = Store::open_or_recover(dir.path(), 1).unwrap();
    assert_eq!(damage, None);
    let loaded = store.load_ads().unwrap();
    assert!(loaded.quarantined.is_empty());
    assert_eq!(store.last_started_at().unwrap(), Some(1_800_000_000_000));
    let mut ads = loaded.ads;
    ads.sort_by_key(|a| (a.ad.name.clone(), std::cmp::Reverse(a.ad.kind)));
    let expected = schema_2_content();
    assert_eq!(ads, expected);
    for (ad, signature) in ads.iter().zip(SCHEMA_2_SIGNATURES) {
        assert_eq!(ad.signature, signature, "{}", ad.ad.key());
    }
    let skein = |a: &StoredAd, signer: &str| {
        a.signed()
            .verify(&fixtures::key_for(signer).verifying_key())
    };
    skein(&ads[0], "ops").unwrap();
    skein(&ads[1], "origin-1").unwrap();
    let pelican = &ads[2];
    crate::pelican::attest::verify(
        &pelican.ad,
        pelican.attestation.as_deref().unwrap(),
        &pelican.signature,
        &fixtures::key_for("director-a").verifying_key(),
    )
    .unwrap();
    drop(store);
    let (store, damage) = Store::open_or_recover(dir.path(), 2).unwrap();
    assert_eq!(damage, None);
    assert_eq!(store.load_ads().unwrap().ads, expected);
}

/// Today's build stores an ad without a location in exactly the bytes the schema-2
/// fixture holds (its manifest digest sums every key and value), so a build from before
/// locations reads what this one writes.
#[tokio::test]
async fn ads_without_a_location_keep_the_bytes_of_formats_1_and_2() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures/schema-2");
    let written = manifest::read(&fixture).unwrap().unwrap().pending;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        for ad in schema_2_content() {
            store.put_ad(&ad).unwrap();
        }
        store.flush().await.unwrap();
    }
    let now = manifest::read(dir.path()).unwrap().unwrap().pending;
    assert_eq!(now, written);
}

/// An ad with a location is format 3 (Skein or Pelican), round-trips whole, and the
/// location is covered by the signature (and by the attestation).
#[tokio::test]
async fn located_ads_are_format_3_and_signed_with_their_location() {
    let madison = crate::coord::Coord::new(43.07, -89.4);
    let mut ad = fixtures::ad("origin-1", ServerKind::Origin, &["/ns"], 1_000, 4);
    ad.location = madison;
    let skein = StoredAd::new(ad.sign(&fixtures::key_for("origin-1")), 2_000, 900_000);
    let mut pelican = attested("origin-p", 3);
    pelican.ad.location = madison;
    pelican = StoredAd::new(
        crate::pelican::attest::attest(
            pelican.ad.clone(),
            *pelican.attestation.clone().unwrap(),
            &fixtures::key_for("director-a"),
        ),
        2_000,
        900_000,
    );
    for stored in [&skein, &pelican] {
        let bytes = stored.encode();
        assert_eq!(bytes[0], codec::LOCATED_AD_FORMAT);
        assert_eq!(&StoredAd::decode(&bytes).unwrap(), stored);
    }
    let key = fixtures::key_for("origin-1").verifying_key();
    skein.signed().verify(&key).unwrap();
    let mut moved = skein.signed();
    moved.ad.location = crate::coord::Coord::new(43.07, -89.5);
    assert!(moved.verify(&key).is_err());
    let mut dropped = skein.signed();
    dropped.ad.location = None;
    assert!(dropped.verify(&key).is_err());
    let director = fixtures::key_for("director-a").verifying_key();
    let attestation = pelican.attestation.as_deref().unwrap();
    crate::pelican::attest::verify(&pelican.ad, attestation, &pelican.signature, &director)
        .unwrap();
    let mut unlocated = pelican.ad.clone();
    unlocated.location = None;
    assert!(
        crate::pelican::attest::verify(&unlocated, attestation, &pelican.signature, &director)
            .is_err()
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_ad(&skein).unwrap();
        store.put_ad(&pelican).unwrap();
        store.flush().await.unwrap();
    }
    let (store, damage) = Store::open_or_recover(dir.path(), 3).unwrap();
    assert_eq!(damage, None);
    let mut loaded = store.load_ads().unwrap().ads;
    loaded.sort_by_key(|a| a.ad.name.clone());
    assert_eq!(loaded, vec![skein, pelican]);
}

/// Wherever the log is cut (at segment boundaries, or anywhere in between), the store
/// opens, loads, and either holds every ad or says it was damaged. (The compose fault test
/// `damaged` once found a cut that opened cleanly and failed at the first read of a lost
/// page, as sled reads pages lazily; this layout, written in one go, does not reproduce
/// that case, which `Store::open_or_recover` now reads every entry for.)
#[test]
fn a_log_cut_anywhere_opens_whole_or_damaged() {
    const ADS: usize = 6000;
    let root = tempfile::tempdir().unwrap();
    let whole = root.path().join("whole");
    filled(&whole, ADS);
    let size = std::fs::metadata(whole.join("db")).unwrap().len();
    const SEGMENT: u64 = 512 * 1024;
    assert!(size > 2 * SEGMENT, "the log spans segments ({size} bytes)");
    let mut cuts: Vec<u64> = (1..16).map(|k| size * k / 16).collect();
    for boundary in (1..=size / SEGMENT).map(|s| s * SEGMENT) {
        cuts.extend([boundary - 1, boundary, boundary + 1]);
    }
    let mut kept = Vec::new();
    for cut in cuts.into_iter().filter(|&c| c < size) {
        let data = root.path().join(format!("cut-{cut}"));
        copy_dir(&whole, &data);
        std::fs::OpenOptions::new()
            .write(true)
            .open(data.join("db"))
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (store, _) = Store::open_or_recover(&data, 7)
            .unwrap_or_else(|e| panic!("cut at {cut} of {size}: {e}"));
        let held = store
            .load_or_recover(7)
            .unwrap_or_else(|e| panic!("cut at {cut} of {size}: the load failed: {e}"))
            .ads
            .len();
        assert!(
            held == ADS || store.damage().is_some(),
            "cut at {cut} of {size}: {held} of {ADS} ads and no damage reported"
        );
        kept.push(format!("{cut}: {held}"));
    }
    println!("cut at byte: ads kept of {ADS}: {}", kept.join(", "));
}

#[tokio::test]
async fn a_store_whose_opening_ended_two_starts_is_moved_aside_unread() {
    use super::recover::OPENING_MARK;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    {
        let (store, damage) = Store::open_or_recover(&data, 1).unwrap();
        assert_eq!(damage, None);
        store.put_ad(&stored("origin-1", 1)).unwrap();
        store.flush().await.unwrap();
    }
    // A start that finished opening leaves no mark.
    assert!(!data.join(OPENING_MARK).exists());
    // One start died opening it (perhaps killed at that moment): it is read again.
    std::fs::write(data.join(OPENING_MARK), "1\n").unwrap();
    let (store, damage) = Store::open_or_recover(&data, 2).unwrap();
    assert_eq!(damage, None);
    assert_eq!(store.load_ads().unwrap().ads, vec![stored("origin-1", 1)]);
    drop(store);
    assert!(!data.join(OPENING_MARK).exists());
    // Two in a row: moved aside without being read, a fresh store in its place.
    std::fs::write(data.join(OPENING_MARK), "2\n").unwrap();
    let (store, damage) = Store::open_or_recover(&data, 3).unwrap();
    let damage = damage.expect("moved aside");
    assert!(damage.what.contains("2 starts in a row"), "{}", damage.what);
    assert_eq!(damage.survivors, 0);
    assert!(damage.moved_to.join("db").exists(), "{damage:?}");
    assert!(store.load_ads().unwrap().ads.is_empty());
    assert!(!data.join(OPENING_MARK).exists());
    store.put_ad(&stored("origin-2", 1)).unwrap();
    store.flush().await.unwrap();
}
