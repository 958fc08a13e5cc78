//! Bucketed digests: a director's view summarised as [`BUCKETS`] hashes, so two directors
//! find the ads that differ by exchanging O(buckets + differences) bytes, not O(all ads).
//!
//! Every live ad falls in the bucket of its key; a bucket's hash is the wrapping sum of
//! its entries' hashes, so it does not depend on the order ads are held in. Two directors
//! holding the same versions of the same keys in a bucket have equal hashes; then only
//! the entries of the buckets that differ are exchanged.

use std::collections::HashSet;

use crate::ad::{AdKey, AdVersion, ServerKind, StoredAd};
use crate::clock::UnixMillis;
use crate::routing::View;
use crate::routing::{FNV_OFFSET, stable_hash};
use crate::wire::DigestEntry;

/// Buckets in a summary (fixed: both sides must agree).
pub const BUCKETS: usize = 256;

fn key_hash(key: &AdKey) -> u64 {
    hash_of(key.kind, &key.name)
}

/// [`key_hash`] of the key `(kind, name)`, from borrowed parts (no key is built).
fn hash_of(kind: ServerKind, name: &str) -> u64 {
    let seed = stable_hash(FNV_OFFSET, kind.as_str().bytes());
    stable_hash(seed, name.bytes())
}

/// The bucket `key` falls in.
pub fn bucket_of(key: &AdKey) -> usize {
    bucket_of_hash(key_hash(key))
}

/// The bucket of the key `(kind, name)`, from borrowed parts.
pub fn bucket_of_parts(kind: ServerKind, name: &str) -> usize {
    bucket_of_hash(hash_of(kind, name))
}

fn bucket_of_hash(key_hash: u64) -> usize {
    (key_hash % BUCKETS as u64) as usize
}

fn entry_hash(key_hash: u64, version: &AdVersion) -> u64 {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&version.started_at.to_le_bytes());
    bytes[8..24].copy_from_slice(version.uuid.as_bytes());
    bytes[24..].copy_from_slice(&version.generation.to_le_bytes());
    stable_hash(key_hash, bytes)
}

/// Every ad live at `now` (what a digest covers), with the hash of its key. Runs over
/// the whole view for every summary and bucket request, so nothing is copied here.
fn live_ads(view: &View, now: UnixMillis) -> impl Iterator<Item = (u64, &StoredAd)> + '_ {
    view.ads()
        .filter(move |a| a.expires_at > now)
        .map(|a| (hash_of(a.ad.kind, &a.ad.name), a.as_ref()))
}

/// The summary of `view` at `now`: one hash per bucket.
pub fn summarise(view: &View, now: UnixMillis) -> Vec<u64> {
    let mut buckets = vec![0u64; BUCKETS];
    for (hash, ad) in live_ads(view, now) {
        let bucket = &mut buckets[bucket_of_hash(hash)];
        *bucket = bucket.wrapping_add(entry_hash(hash, &ad.ad.version()));
    }
    buckets
}

/// The entries of `view` at `now` in `buckets` (all of them when `None`).
pub fn entries(view: &View, now: UnixMillis, buckets: Option<&HashSet<usize>>) -> Vec<DigestEntry> {
    live_ads(view, now)
        .filter(|(hash, _)| buckets.is_none_or(|b| b.contains(&bucket_of_hash(*hash))))
        .map(|(_, a)| DigestEntry {
            key: a.ad.key(),
            version: a.ad.version(),
        })
        .collect()
}

/// The buckets whose hashes differ between two summaries (all of them if the summaries
/// are not of the same shape).
pub fn differing(mine: &[u64], theirs: &[u64]) -> HashSet<usize> {
    if mine.len() != theirs.len() {
        return (0..BUCKETS).collect();
    }
    mine.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ad::ServerKind;
    use crate::ad::StoredAd;
    use crate::fixtures;

    const NOW: u64 = 1_700_000_000_000;

    fn stored(name: &str, generation: u64) -> StoredAd {
        let signed = fixtures::ad(name, ServerKind::Origin, &["/ns"], NOW - 1000, generation)
            .sign(&fixtures::key_for(name));
        StoredAd::new(signed, NOW, 900_000)
    }

    #[test]
    fn equal_views_have_equal_summaries_whatever_their_order() {
        let ads: Vec<StoredAd> = (0..500).map(|i| stored(&format!("s{i}"), 1)).collect();
        let forward = View::from_ads(ads.clone());
        let backward = View::from_ads(ads.into_iter().rev());
        assert_eq!(summarise(&forward, NOW), summarise(&backward, NOW));
        assert!(differing(&summarise(&forward, NOW), &summarise(&backward, NOW)).is_empty());
    }

    #[test]
    fn one_newer_ad_differs_in_exactly_its_bucket() {
        let ads: Vec<StoredAd> = (0..500).map(|i| stored(&format!("s{i}"), 1)).collect();
        let before = View::from_ads(ads);
        let newer = stored("s42", 2);
        let key = newer.ad.key();
        let after = before.with_ad(Arc::new(newer));
        let diff = differing(&summarise(&before, NOW), &summarise(&after, NOW));
        assert_eq!(diff, HashSet::from([bucket_of(&key)]));
        let entries = entries(&after, NOW, Some(&diff));
        assert!(
            entries
                .iter()
                .any(|e| e.key == key && e.version.generation == 2)
        );
        assert!(
            entries.len() < 20,
            "only one bucket's entries: {}",
            entries.len()
        );
        // A missing ad differs too.
        let without = before.without(&key);
        assert_eq!(
            differing(&summarise(&before, NOW), &summarise(&without, NOW)),
            HashSet::from([bucket_of(&key)])
        );
    }

    #[test]
    fn expired_ads_are_not_summarised() {
        let view = View::from_ads([stored("s1", 1)]);
        let later = NOW + 900_001;
        assert_eq!(summarise(&view, later), vec![0; BUCKETS]);
        assert!(entries(&view, later, None).is_empty());
    }
}
