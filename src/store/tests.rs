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
        store
            .put_peer(&PeerRecord {
                url: "http://d:1".into(),
                sources: PeerSources {
                    configured: true,
                    ..Default::default()
                },
                first_seen: 5,
                last_ok: 6,
            })
            .unwrap();
        store.set_last_started_at(42).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.load_ads().unwrap();
    assert_eq!(loaded.ads, vec![stored("origin-1", 2)]);
    assert!(loaded.quarantined.is_empty());
    assert_eq!(store.load_peers().unwrap()[0].url, "http://d:1");
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
    let mut bytes = codec::encode(&bad);
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
    let aside = aside.expect("moved aside");
    assert!(aside.exists());
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
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(
        reopened.load_ads().unwrap().ads.len(),
        2,
        "schema 2 opens as is"
    );
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
